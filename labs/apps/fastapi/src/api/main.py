from fastapi import FastAPI

from api.items import router

app = FastAPI(title="shop")
app.include_router(router)


@app.get("/")
def root():
    return {"service": "shop", "version": 1}
