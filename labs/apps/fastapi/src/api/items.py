from fastapi import APIRouter

from api.schemas import Item

router = APIRouter(prefix="/items")
STOCK = {"pen": 3}


@router.get("/{name}")
def get_item(name: str) -> Item:
    return Item(name=name, price=STOCK.get(name, 0))


@router.post("/")
def add_item(item: Item) -> Item:
    return item
