"""The demo's URLs: the API at the root, the admin under ``admin/``, its OpenAPI schema at ``schema/``."""

from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from testproject.accounts.views import ResetPasswordRequestViewSet
from testproject.library.views import BookViewSet

router = DefaultRouter()
router.register("reset-password-requests", ResetPasswordRequestViewSet, basename="reset-password-request")
router.register("books", BookViewSet)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("", include(router.urls)),
    path("", include("django_messenger.urls")),  # the status resource of tracked writes: messages/<id>/
]


def not_found(request: HttpRequest, exception: Exception) -> JsonResponse:
    """A URL that matches no route (``/books/1.5/``) gets JSON, as the API's own 404s do
    (Django's HTML page with DEBUG off; with DEBUG on, Django shows its technical page)."""
    return JsonResponse({"detail": "Not found."}, status=404)


handler404 = not_found
