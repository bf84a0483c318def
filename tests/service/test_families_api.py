"""GET /v1/families: the spaces and library defaults of the built-in families."""

from __future__ import annotations

import lightgbm
from fastapi.testclient import TestClient

from hyperprior.service.app import create_app
from hyperprior.service.settings import Settings


def _client(tmp_path) -> TestClient:  # type: ignore[no-untyped-def]
    from hyperprior.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'f.db'}"
    upgrade(url)
    return TestClient(create_app(Settings(database_url=url, retrain_in_process=False)))


def test_families_list_spaces_and_defaults(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with _client(tmp_path) as client:
        body = client.get("/v1/families").json()
        assert body["count"] == 5
        names = {f["family"] for f in body["data"]}
        assert names == {"lightgbm", "random_forest", "linear", "keras_mlp", "xgboost"}
        lgbm = client.get("/v1/families/lightgbm").json()
        params = {p["name"] for p in lgbm["space"]["params"]}
        assert {"n_estimators", "learning_rate", "num_leaves"} <= params
        # the default is the library's own: LGBMClassifier(**default) changes nothing
        default = lgbm["defaults"]["binary"]
        assert (
            lightgbm.LGBMClassifier(**default).get_params()
            == lightgbm.LGBMClassifier().get_params()
        )
        missing = client.get("/v1/families/catboost")
        assert missing.status_code == 404
        assert "lightgbm" in missing.json()["detail"]
