"""Dramatiq brokers with what messenger's contract needs and the broker's own class lacks.

Each module is one broker, named as Dramatiq names its own (``brokers/redis.py``); a project
names the class in ``DRAMATIQ_BROKER["BROKER"]``. See docs/transports.md.
"""

#: Set (True) on a ``MessageProxy`` by the worker's middleware when the failure of a message about
#: to be dead-lettered could be neither stored nor held (the database down, and the broker
#: refusing the held copy). A broker that is the database itself (brokers/postgres.py) then
#: refuses the rejection, so that Dramatiq tries it again, and the failure with it, later.
FAILURE_NOT_KEPT = "messenger_failure_not_kept"
