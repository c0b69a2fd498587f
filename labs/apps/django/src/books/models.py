from django.db import models


class Book(models.Model):
    title = models.CharField(max_length=100)
    pages = models.IntegerField(default=100)

    def label(self):
        return f"{self.title} ({self.pages} p.)"
