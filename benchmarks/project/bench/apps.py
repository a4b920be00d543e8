from django.apps import AppConfig


class BenchConfig(AppConfig):
    name = "benchmarks.project.bench"
    label = "bench"
