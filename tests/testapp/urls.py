from django.urls import include, path
from rest_framework.routers import DefaultRouter

from . import views

router = DefaultRouter()
router.register("pings", views.PingViewSet, basename="ping")
router.register("shouts", views.ShoutViewSet, basename="shout")
router.register("computations", views.ComputeViewSet, basename="compute")
router.register("articles", views.ArticleViewSet, basename="article")
router.register("renamed-articles", views.RenameArticleViewSet, basename="renamed-article")
router.register("private-pings", views.PrivatePingViewSet, basename="private-ping")
router.register("admin-pings", views.AdminPingViewSet, basename="admin-ping")
router.register("throttled-pings", views.ThrottledPingViewSet, basename="throttled-ping")
router.register("tracked-pings", views.TrackedPingViewSet, basename="tracked-ping")
router.register("keyed-pings", views.KeyedPingViewSet, basename="keyed-ping")
router.register("tracked-shouts", views.TrackedShoutViewSet, basename="tracked-shout")
router.register("tracked-flaky", views.TrackedFlakyViewSet, basename="tracked-flaky")

urlpatterns = [
    path("delayed-pings/", views.DelayedPingView.as_view()),
    path("demo/", include("testproject.urls")),  # the status resource too: /demo/messages/<id>/
    *router.urls,
]
