"""The backend for a Qdrant server or cluster, through qdrant-client (whose local mode serves the tests)."""

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient, models

from geosearch.errors import GeosearchError
from geosearch.store.backend import HNSW_EF, Hit, PagedScroll, free_bytes_at, vector_of
from geosearch.store.filters import DateRange, Filter, GeoBox, HasId, Match, MatchAny, Range

_SCHEMAS = {"keyword": models.PayloadSchemaType.KEYWORD, "integer": models.PayloadSchemaType.INTEGER,
            "float": models.PayloadSchemaType.FLOAT, "geo": models.PayloadSchemaType.GEO,
            "datetime": models.PayloadSchemaType.DATETIME}


def _condition(condition) -> models.Condition:
    match condition:
        case Match(key, value):
            return models.FieldCondition(key=key, match=models.MatchValue(value=value))
        case MatchAny(key, values):
            return models.FieldCondition(key=key, match=models.MatchAny(any=list(values)))
        case Range(key, gte, lte):
            return models.FieldCondition(key=key, range=models.Range(gte=gte, lte=lte))
        case DateRange(key, gte, lte):
            return models.FieldCondition(key=key, range=models.DatetimeRange(gte=gte, lte=lte))
        case GeoBox(key, min_lon, min_lat, max_lon, max_lat):
            box = models.GeoBoundingBox(top_left=models.GeoPoint(lon=min_lon, lat=max_lat),
                                        bottom_right=models.GeoPoint(lon=max_lon, lat=min_lat))
            return models.FieldCondition(key=key, geo_bounding_box=box)
        case HasId(ids):
            return models.HasIdCondition(has_id=list(ids))
    raise TypeError(condition)


def _filter(where: Filter | None) -> models.Filter | None:
    if where is None:
        return None
    return models.Filter(must=[_condition(c) for c in where.must] or None,
                         must_not=[_condition(c) for c in where.must_not] or None)


class ClientBackend(PagedScroll):
    def __init__(self, client: QdrantClient, location: str, local_path: Path | None = None):
        self.client, self.location, self.local_path = client, location, local_path

    @classmethod
    def connect(cls, url: str, api_key: str | None = None, timeout: float = 5.0) -> "ClientBackend":
        """A Qdrant server; fails within `timeout` seconds with one clear line when it cannot be reached."""
        client = QdrantClient(url=url, api_key=api_key, timeout=timeout)
        try:
            client.get_collections()
        except Exception as error:  # connection refused, DNS, TLS, 401 ... all mean the same to the user
            client.close()
            detail = str(error).split("\n")[0] or type(error).__name__
            raise GeosearchError(f"cannot reach Qdrant at {url}: {detail}") from None
        return cls(client, url)

    @classmethod
    def local(cls, path: str) -> "ClientBackend":
        """qdrant-client's own local mode (no server): slow past ~20k points, used to test this code path."""
        return cls(QdrantClient(path=path), f"qdrant-client local mode at {path}", local_path=Path(path))

    def has_collection(self, name: str) -> bool:
        return self.client.collection_exists(name)

    def create_collection(self, name: str, dim: int, indexes: dict[str, str]) -> None:
        vectors = models.VectorParams(size=dim, distance=models.Distance.COSINE)
        self.client.create_collection(name, vectors_config=vectors)
        for key, kind in () if self.local_path else indexes.items():  # local mode has no payload indexes
            self.client.create_payload_index(name, key, field_schema=_SCHEMAS[kind])

    def upsert(self, name: str, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        self.client.upsert(name, points=models.Batch(ids=ids, vectors=vectors.tolist(), payloads=payloads), wait=True)

    def delete(self, name: str, where: Filter) -> None:
        self.client.delete(name, points_selector=models.FilterSelector(filter=_filter(where)), wait=True)

    def set_payload(self, name: str, where: Filter, payload: dict) -> None:
        self.client.set_payload(name, payload, points=models.FilterSelector(filter=_filter(where)), wait=True)

    def count(self, name: str, where: Filter | None = None) -> int:
        return self.client.count(name, count_filter=_filter(where), exact=True).count

    def _pages(self, name: str, where: Filter | None, page: int, vectors: bool) -> Iterator[list]:
        offset = None
        while True:
            records, offset = self.client.scroll(name, scroll_filter=_filter(where), limit=page, offset=offset,
                                                 with_payload=True, with_vectors=vectors)
            if records:
                yield records
            if offset is None:
                return

    def payloads(self, name: str, ids: list[str]) -> dict[str, dict]:
        return {str(r.id): r.payload or {} for r in self.client.retrieve(name, ids=ids, with_payload=True)}

    def points(self, name: str, ids: list[str]) -> dict[str, tuple[np.ndarray, dict]]:
        records = self.client.retrieve(name, ids=ids, with_payload=True, with_vectors=True)
        return {str(r.id): (vector_of(self.location, r.vector), r.payload or {}) for r in records}

    def _search_params(self, exact: bool = False) -> models.SearchParams | None:
        return None if self.local_path else models.SearchParams(  # local mode is always exact
            hnsw_ef=HNSW_EF, exact=exact, acorn=models.AcornSearchParams(enable=True))

    def query(self, name: str, vector: np.ndarray, k: int, where: Filter | None = None,
              exact: bool = False) -> list[Hit]:
        response = self.client.query_points(name, query=vector.tolist(), limit=k, query_filter=_filter(where),
                                            search_params=self._search_params(exact), with_payload=True)
        return [Hit(str(p.id), p.score, p.payload or {}) for p in response.points]

    def recommend(self, name: str, positives: Sequence[np.ndarray], negatives: Sequence[np.ndarray], k: int,
                  where: Filter | None = None) -> list[Hit]:
        examples = models.RecommendInput(positive=[v.tolist() for v in positives],
                                         negative=[v.tolist() for v in negatives],
                                         strategy=models.RecommendStrategy.BEST_SCORE)
        response = self.client.query_points(name, query=models.RecommendQuery(recommend=examples), limit=k,
                                            query_filter=_filter(where), search_params=self._search_params(),
                                            with_payload=True)
        return [Hit(str(p.id), p.score, p.payload or {}) for p in response.points]

    def optimize(self, name: str) -> bool:
        """A server builds HNSW in the background by its own thresholds; local mode has none."""
        return False

    def indexed_count(self, name: str) -> int:
        return self.client.get_collection(name).indexed_vectors_count or 0

    def free_bytes(self) -> int | None:
        return free_bytes_at(self.local_path) if self.local_path else None

    def flush(self) -> None:
        """Writes are acknowledged only once applied (wait=True), so there is nothing left to flush."""

    def close(self) -> None:
        self.client.close()
