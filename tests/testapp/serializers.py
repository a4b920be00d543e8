from rest_framework import serializers

from .models import Article


class PingSerializer(serializers.Serializer):  # type: ignore[type-arg]
    text = serializers.CharField(max_length=50)


class ComputeSerializer(serializers.Serializer):  # type: ignore[type-arg]
    a = serializers.IntegerField()
    b = serializers.IntegerField()


class ArticleSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = Article
        fields = ["id", "title", "body", "price", "published", "author"]
        read_only_fields = ["author"]


class RenameArticleSerializer(serializers.Serializer):  # type: ignore[type-arg]
    title = serializers.CharField(max_length=200)
