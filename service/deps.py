"""Dependencies of the routes, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from hyperprior.db.store import Store
from hyperprior.service.settings import Settings

__all__ = ["SettingsDep", "StoreDep", "get_settings", "get_store"]


def get_store(request: Request) -> Store:
    """The store built by `hyperprior.service.app.create_app`."""
    store: Store = request.app.state.store
    return store


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
