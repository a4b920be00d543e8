from rest_framework import serializers


class PingSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    count = serializers.IntegerField()


class TimedPingSerializer(serializers.Serializer):
    sent = serializers.FloatField()
