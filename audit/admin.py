from django.contrib import admin

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: superusers may read the log, nobody may add, change or delete events."""

    list_display = (
        "created",
        "username",
        "action",
        "team",
        "patient_identifier",
        "object_type",
        "object_id",
        "ip_address",
    )
    list_filter = ("action", "team")
    search_fields = ("username", "patient_identifier", "object_id", "summary")
    date_hierarchy = "created"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
