from __future__ import annotations

from dataclasses import dataclass, field

import attrs

FEE = 2


@attrs.define
class Money:
    amount: int
    currency: str = "EUR"

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"

    def plus(self, other: Money) -> Money:
        return Money(self.amount + other.amount, self.currency)


@dataclass
class Account:
    owner: str
    entries: list[int] = field(default_factory=list)

    def balance(self) -> int:
        return sum(self.entries) - FEE * len(self.entries)


@attrs.frozen
class Rate:
    percent: int

    def apply(self, value: int) -> int:
        return value * self.percent // 100
