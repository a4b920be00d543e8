"""One URL per variant."""

from django.urls import path

from benchmarks.project.bench import views

urlpatterns = [
    path("bare/", views.BareView.as_view()),
    path("dramatiq/", views.DramatiqView.as_view()),
    path("celery/", views.CeleryView.as_view()),
    path("messenger/", views.PingViewSet.as_view({"post": "create"})),
    path("e2e/dramatiq/", views.TimedDramatiqView.as_view()),
    path("e2e/messenger/", views.TimedPingViewSet.as_view({"post": "create"})),
]
