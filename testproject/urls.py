"""The demo's URLs: the API at the root, the admin under ``admin/``, the OpenAPI schema at
``schema/`` when drf-spectacular is installed."""

from django.apps import apps
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
]

if apps.is_installed("drf_spectacular"):
    from drf_spectacular.views import SpectacularAPIView

    urlpatterns.append(path("schema/", SpectacularAPIView.as_view(), name="schema"))
