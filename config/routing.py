from __future__ import annotations

from django.urls import path

from approvals.consumers import InboxConsumer
from config.consumers import PingConsumer

websocket_urlpatterns = [
    path("ws/inbox/", InboxConsumer.as_asgi()),
    path("ws/ping/", PingConsumer.as_asgi()),
]
