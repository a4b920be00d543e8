"""The demo's URLs: the API at the root, the admin under ``admin/``."""

from django.contrib import admin
from django.urls import include, path
from rest_framework.routers import DefaultRouter

from testproject.accounts.views import ResetPasswordRequestViewSet
from testproject.library.views import BookViewSet

router = DefaultRouter()
router.register("reset-password-requests", ResetPasswordRequestViewSet, basename="reset-password-request")
router.register("books", BookViewSet)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include(router.urls)),
    path("", include("django_messenger.urls")),  # the status resource of tracked writes: messages/<id>/
]
