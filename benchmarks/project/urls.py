"""One URL per variant."""

from django.conf import settings
from django.urls import include, path

from benchmarks.project.bench import views

urlpatterns = [
    path("bare/", views.BareView.as_view()),
    path("dramatiq/", views.DramatiqView.as_view()),
    path("celery/", views.CeleryView.as_view()),
    path("messenger/", views.PingViewSet.as_view({"post": "create"})),
    path("messenger/tracked/", views.TrackedPingViewSet.as_view({"post": "create"})),
    path("messenger/keyed/", views.KeyedPingViewSet.as_view({"post": "create"})),
    path("e2e/dramatiq/", views.TimedDramatiqView.as_view()),
    path("e2e/messenger/", views.TimedPingViewSet.as_view({"post": "create"})),
]

if getattr(settings, "WITH_MESSENGER", True):  # the status resource of (h)'s Location (check E015)
    urlpatterns.append(path("", include("django_messenger.urls")))
