# The records of idempotent handlers (@handler(idempotent=True)): one row a message and handler.

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_messenger", "0004_failure_dashboard"),
    ]

    operations = [
        migrations.CreateModel(
            name="HandledMessage",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("message_id", models.UUIDField()),
                ("handler", models.CharField(max_length=255)),
                ("handled_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
            ],
            options={
                "verbose_name": "handled message",
                "verbose_name_plural": "handled messages",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("message_id", "handler"), name="django_messenger_handled_once"
                    )
                ],
            },
        ),
    ]
