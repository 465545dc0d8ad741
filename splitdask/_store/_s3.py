"""S3 through s3fs: a :class:`FsspecStore` whose manifest commits are conditional writes."""

from __future__ import annotations

from splitdask._store._access import access, retrying
from splitdask._store._fsspec import FsspecStore

__all__ = ["S3Store"]


class S3Store(FsspecStore):
    """S3 (s3fs): the manifest is replaced by a conditional PutObject, ``If-Match``
    its ETag (``If-None-Match: *`` to create it), so concurrent commits from any
    number of machines are serialised by the server."""

    atomic_commit = True

    def _bucket_key(self, rel: str) -> tuple[str, str]:
        bucket, _, key = self.full(rel).lstrip("/").partition("/")
        return bucket, key

    def read_versioned(self, rel: str) -> tuple[bytes | None, str | None]:
        from fsspec.asyn import sync

        bucket, key = self._bucket_key(rel)

        async def get() -> tuple[bytes, str]:
            resp = await self.direct._call_s3("get_object", Bucket=bucket, Key=key)
            body = resp["Body"]
            try:
                data = await body.read()
            finally:
                body.close()
            return bytes(data), str(resp["ETag"])

        try:
            data, etag = retrying(self.where(rel), lambda: sync(self.direct.loop, get))
        except FileNotFoundError:
            return None, None
        return data, etag

    def replace_if(self, rel: str, data: bytes, token: str | None) -> str | None:
        bucket, key = self._bucket_key(rel)
        cond = {"IfMatch": token} if token is not None else {"IfNoneMatch": "*"}
        try:
            with access(self.where(rel)):
                out = self.direct.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **cond)
        except Exception as exc:
            if _precondition_failed(exc):
                return None
            raise
        finally:
            self.direct.invalidate_cache(self.full(rel))
        return str(out["ETag"])


def _precondition_failed(exc: BaseException) -> bool:
    """Whether S3 refused a conditional write (412, or 409 for a concurrent one)."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (
                409,
                412,
            )
        if isinstance(seen, FileExistsError):  # s3fs's word for a failed If-None-Match
            return True
        seen = seen.__cause__ or seen.__context__
    return False
