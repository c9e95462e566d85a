"""Authentication backend that refuses every login try while the user name or address is locked out.

It guards every way in that authenticates with a password (the login page, the admin, the browsable API),
not only the page whose form explains the lock.
"""

from __future__ import annotations

from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied

from .lockout import is_locked
from .log import client_address


class LockoutModelBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        address = client_address(request)
        if username is not None and is_locked(str(username), address):
            # Django then sends user_login_failed; the receiver files it as LOGIN_LOCKED, which is not
            # counted, so a lock lifts on time even while someone keeps trying.
            if request is not None:
                request.covidsite_login_locked = True
            raise PermissionDenied("locked out")  # stops Django trying other backends
        return super().authenticate(request, username=username, password=password, **kwargs)
