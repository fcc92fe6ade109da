from __future__ import annotations

from django.urls import path

from approvals import views

urlpatterns = [
    path("inbox/", views.inbox, name="inbox"),
    path("inbox/bulk/", views.inbox_bulk, name="inbox-bulk"),
    path("inbox/<int:approval_id>/", views.inbox_detail, name="inbox-detail"),
]
