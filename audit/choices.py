"""Choices for the audit log."""

from django.db import models


class AuditAction(models.TextChoices):
    VIEW = "view", "Viewed"
    EXPORT = "export", "Exported"
    UPLOAD = "upload", "Uploaded"
    CHANGE = "change", "Changed"
    DELETE = "delete", "Deleted"
    LOGIN = "login", "Logged in"
    LOGIN_FAILED = "login_failed", "Failed login"
    LOGIN_LOCKED = "login_locked", "Login refused (locked out)"
    LOGOUT = "logout", "Logged out"
    TOKEN = "token", "API token created or revoked"
