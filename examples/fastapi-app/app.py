"""A FastAPI app served by Aetherless (`asgi: app`): the Python SDK's ASGI adapter runs it straight
from the shared-memory ring, with no HTTP server in the handler.

FastAPI comes from the function's own virtualenv: `requirements: fastapi-app/requirements.txt`
makes `aether up` build it with pip (once; later `up`s reuse it from the state folder).

    curl http://127.0.0.1:8084/items/7?q=hi
    curl -X POST http://127.0.0.1:8084/items -H 'content-type: application/json' -d '{"name": "pen", "price": 1.5}'
"""

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI(title="aetherless example")
items: dict[int, dict] = {}


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.get("/")
async def root():
    return {"hello": "fastapi", "items": len(items)}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str = ""):
    if item_id in items:
        return {"id": item_id, **items[item_id], "q": q}
    if item_id < 0:
        raise HTTPException(status_code=404, detail="no such item")
    return {"id": item_id, "q": q}


@app.post("/items", status_code=201)
async def create_item(item: Item):
    item_id = len(items) + 1
    items[item_id] = item.model_dump()
    return {"id": item_id, **items[item_id]}
