"""Who acts: the user model as the services take it."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User

# A request's user (signed in or not), or None for the system itself (the sweeper, a worker).
UserLike = User | AnonymousUser | None


def display_name(user: UserLike) -> str:
    return user.get_username() if user is not None and user.is_authenticated else "the system"
