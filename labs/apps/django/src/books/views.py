from django.http import HttpResponse, JsonResponse

from books.models import Book

SHELF = "main"


def index(request):
    return JsonResponse({"shelf": SHELF, "books": [b.label() for b in Book.objects.order_by("id")]})


def detail(request, pk):
    return HttpResponse(Book.objects.get(pk=pk).label())
