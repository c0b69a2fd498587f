from pydantic import BaseModel, Field, field_validator

CURRENCY = "EUR"


class Item(BaseModel):
    name: str
    price: int = Field(ge=0)

    @field_validator("name")
    @classmethod
    def strip(cls, value: str) -> str:
        return value.strip()

    def label(self) -> str:
        return f"{self.name}: {self.price} {CURRENCY}"


class Basket(BaseModel):
    items: list[Item] = []

    def total(self) -> int:
        return sum(item.price for item in self.items)
