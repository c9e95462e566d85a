"""The login form: says plainly when an account or address is locked out, before checking the password."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import AuthenticationForm

from .choices import AuditAction
from .lockout import is_locked, locked_message
from .log import client_address, record


class LockoutAuthenticationForm(AuthenticationForm):
    def clean(self):
        username = self.cleaned_data.get("username") or ""
        if username and is_locked(username, client_address(self.request)):
            record(self.request, AuditAction.LOGIN_LOCKED, username=username, summary="login refused: locked out")
            raise forms.ValidationError(locked_message(), code="locked")
        return super().clean()
