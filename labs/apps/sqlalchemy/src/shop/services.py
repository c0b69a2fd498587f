from sqlalchemy import func, select

from shop.models import Order, User

DISCOUNT = 10


def _fmt(value: int) -> str:
    return f"{value} EUR"


def total(user: User) -> str:
    raw = sum(o.amount for o in user.orders)
    return _fmt(raw - raw * DISCOUNT // 100)


def place(session, user: User, amount: int) -> int:
    session.add(Order(amount=amount, user=user))
    session.commit()
    return session.scalar(select(func.count()).select_from(Order))
