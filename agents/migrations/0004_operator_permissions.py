"""Operators edit agents and business rules in the admin (no deploy) and read runs."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

OPERATOR_PERMISSIONS = {
    "agents": ["view_agent", "add_agent", "change_agent", "view_run", "view_step", "view_toolcall"],
    "approvals": [
        "view_businessrule",
        "add_businessrule",
        "change_businessrule",
        "delete_businessrule",
        "view_approvalrequest",
    ],
}


def grant(apps, schema_editor):
    # Permissions are created after all migrations ran (post_migrate); make them exist now.
    for label in OPERATOR_PERMISSIONS:
        config = apps.get_app_config(label)
        models_module = getattr(config, "models_module", None)
        config.models_module = models_module or True  # create_permissions skips apps without one
        try:
            create_permissions(config, apps=apps, verbosity=0)
        finally:
            config.models_module = models_module
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    operators, _ = Group.objects.get_or_create(name="operators")
    for label, codenames in OPERATOR_PERMISSIONS.items():
        operators.permissions.add(*Permission.objects.filter(content_type__app_label=label, codename__in=codenames))


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    operators = Group.objects.filter(name="operators").first()
    if operators is None:
        return
    for label, codenames in OPERATOR_PERMISSIONS.items():
        operators.permissions.remove(*Permission.objects.filter(content_type__app_label=label, codename__in=codenames))


class Migration(migrations.Migration):
    dependencies = [("agents", "0003_run_active_ms"), ("approvals", "0001_initial")]
    operations = [migrations.RunPython(grant, revoke)]
