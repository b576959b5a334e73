# ruff: noqa  -- copied verbatim from ../shared/testing/kmock_compat.py (tested there); keep in sync by copy.
"""A thin kmock.KubernetesEmulator subclass adding what kopf and the official
client rely on: monotonic metadata.resourceVersion (bumped on every
create/patch), uid, creationTimestamp, generation; HTTP 201 on create; and
watch streams that honour ?resourceVersion= (no replay of objects already
returned by the preceding LIST)."""
import asyncio, datetime, itertools, uuid
import kmock
from kmock._internal import enums


class RVEmulator(kmock.KubernetesEmulator):
    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._rv = itertools.count(1)

    async def _handle(self, request):
        if request.resource is not None and isinstance(request.data, (dict, list)):
            rv = str(next(self._rv))
            if request.action == enums.action.CREATE and isinstance(request.data, dict):
                meta = request.data.setdefault('metadata', {})
                if request.namespace and not meta.get('namespace'):
                    meta['namespace'] = request.namespace  # kmock 0.8 does not take it from the URL
                meta.update(resourceVersion=rv, uid=str(uuid.uuid4()), generation=1,
                            creationTimestamp=datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ'))
            elif request.action == enums.action.UPDATE:
                if isinstance(request.data, dict):
                    request.data.setdefault('metadata', {})['resourceVersion'] = rv
                else:  # JSON-patch (list of ops), as kopf sends for finalizers
                    request.data.append({'op': 'add', 'path': '/metadata/resourceVersion', 'value': rv})
        return await super()._handle(request)

    async def _serve_list(self, request):
        result = await super()._serve_list(request)
        result['metadata']['resourceVersion'] = str(next(self._rv))
        return result

    async def _serve_create(self, request):
        return kmock.Response(status=201, payload=await super()._serve_create(request))

    async def _serve_watch(self, request):
        since = request.params.get('resourceVersion')
        since = int(since) if since and since.isdigit() else None
        timeout = request.params.get('timeoutSeconds')
        timeout = float(timeout) if timeout and timeout.isdigit() else None
        try:
            async with asyncio.timeout(timeout):  # kmock 0.8 ignores ?timeoutSeconds=
                async for event in super()._serve_watch(request):
                    if since is not None and isinstance(event, dict):
                        rv = event.get('object', {}).get('metadata', {}).get('resourceVersion')
                        if rv is not None and str(rv).isdigit() and int(rv) <= since:
                            continue
                    yield event
        except TimeoutError:
            return


# ---- optional extras for kubectl compatibility (kmock 0.8) ----
from kmock._internal import parsing as _parsing

_orig_parse_path = _parsing.parse_path

def _parse_path(path: str):
    # kmock 0.8 treats '/api/v1/namespaces[/NAME]' as a namespace prefix and raises ValueError.
    parts = path.strip('/').split('/')
    if parts[:3] == ['api', 'v1', 'namespaces'] and len(parts) in (3, 4, 5) and not (len(parts) >= 5 and parts[4] not in ('status', 'finalize')):
        if len(parts) == 3 or len(parts) in (4, 5):
            return _parsing.ParsedPath(group='', version='v1', plural='namespaces',
                                       namespace=None, name=parts[3] if len(parts) > 3 else None,
                                       subresource=parts[4] if len(parts) > 4 else None)
    return _orig_parse_path(path)

_parsing.parse_path = _parse_path


class KubectlEmulator(RVEmulator):
    async def _serve_list(self, request):
        result = await super()._serve_list(request)
        res = request.resource
        info = self._resources[res] if res in self._resources else None
        kind = (info.kind if info is not None and info.kind else res.plural.capitalize())
        result['kind'] = f'{kind}List'
        result['apiVersion'] = f'{res.group}/{res.version}' if res.group else res.version
        return result

    async def _serve_version(self, request):
        result = await super()._serve_version(request)
        result['groupVersion'] = result['groupVersion'].lstrip('/')
        for r in result.get('resources', []):
            if '/' in r['name']:
                r['shortNames'] = []; r['categories'] = []
        return result
