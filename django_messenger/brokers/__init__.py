"""Dramatiq brokers with what messenger's contract needs and the broker's own class lacks.

Each module is one broker, named as Dramatiq names its own (``brokers/redis.py``); a project
names the class in ``DRAMATIQ_BROKER["BROKER"]``. See docs/transports.md.
"""
