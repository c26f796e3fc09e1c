"""The supervisor (DESIGN §3): one root nursery wiring store, providers, sniffer, control, metrics.

`run(config)` opens the store, the provider pools, the waiters and the push
service, then starts each listener with `nursery.start` (so it is bound before
anything depends on it) and reports a `Running` object with every bound
address through `task_status.started`; tests and the demo bind port 0 and
read the ports back from it.

Stopping (SIGTERM, SIGINT, or `Running.shutdown()`), within `SHUTDOWN_GRACE`:

1. stop listening: the sniffer closes its sockets, the control server stops
   accepting (connections already open stay, to carry the answers);
2. every parked `push` ends with `ShuttingDown`, and the replies are written;
3. provider pools close their HTTP/2 connections cleanly (GOAWAY);
4. the store commits what is queued and closes.

SIGHUP (or `Running.reload()`) re-reads the configuration file: a bad file keeps
the running configuration and logs why. Log settings, the push limits, the
sniffer (restarted on its new addresses and rules) and the metrics endpoint
change at once; the control endpoints and the store path need a restart, which
is logged.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from .config import Config, ConfigError, load_config, load_proxy
from .logs import FLUSH_INTERVAL, flush_logs, get_logger, setup_logging
from .metrics import MetricsServer, new_registry
from .registrations import RegistrationTable

log = get_logger("app")

SHUTDOWN_GRACE = 4.0  # DESIGN/issue: exit 0 within 5 s of SIGTERM, leave a margin
REPLY_FLUSH = 1.0  # of which at most this long for the ShuttingDown replies to go out
PROVIDERS_CLOSE = 1.5  # and this long for the GOAWAYs


# --- the running service ----------------------------------------------------------------


@attrs.define
class Running:
    """What `run` reports once every listener is bound; also the handle to stop or reload."""

    config: Config
    sniffer: list[tuple[str, int]] = attrs.field(factory=list)
    control_socket: str | None = None
    control_tcp: tuple[str, int] | None = None
    metrics: tuple[str, int] | None = None
    started_at: float = attrs.field(factory=time.time)
    service: Any = None
    store: Any = None
    waiters: Any = None
    providers: Any = None
    registry: Any = None  # the prometheus_client CollectorRegistry /metrics serves
    hep: Any = None  # homer.HepCapture while [hep] capture is set
    _stop: trio.Event = attrs.field(factory=trio.Event)
    _reload: Callable[[Config | None], Any] | None = None

    @property
    def sniffer_port(self) -> int:
        return self.sniffer[0][1]

    @property
    def control_port(self) -> int | None:
        return None if self.control_tcp is None else self.control_tcp[1]

    @property
    def metrics_port(self) -> int | None:
        return None if self.metrics is None else self.metrics[1]

    def shutdown(self) -> None:
        """Begin the graceful stop (what SIGTERM does); `run` returns when it is done."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def reload(self, config: Config | None = None) -> bool:
        """Apply `config`, or re-read the file (what SIGHUP does). False: kept the old one."""
        assert self._reload is not None
        result: bool = await self._reload(config)
        return result


# --- helpers ----------------------------------------------------------------------------------


def _prepare_dirs(config: Config) -> None:
    """DESIGN §11: serve creates the parent folders of store.path and unix_socket."""
    wanted = [("store.path", config.store.path)] if config.store.backend == "sqlite" else []
    if config.control.unix_socket != "-":
        wanted.append(("control.unix_socket", config.control.unix_socket))
    for key, path in wanted:
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, mode=0o750, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create folder {parent}: {exc.strerror or exc}",
                file=config.source or "<defaults>",
                key=key,
            ) from None


def _call_stats(source: Callable[[], Mapping[str, Any]] | None) -> dict[str, Any]:
    if source is None:
        return {}
    try:
        return dict(source())
    except Exception:  # a statistics bug must not break `status` or a scrape
        log.exception("statistics source failed")
        return {}


# --- run -----------------------------------------------------------------------------------------


async def run(
    config: Config,
    *,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
    manage_logging: bool = False,
    handle_signals: bool = True,
    pusher: Any = None,
    freeze_gc: bool = False,
) -> None:
    """Run the sidecar until shutdown; see the module docstring.

    `manage_logging`: (re)configure logging from `[log]` (the CLI's `serve` does).
    `handle_signals`: install SIGTERM/SIGINT/SIGHUP handlers (main thread only).
    `pusher`: a `model.Pusher` to use instead of the real provider pools (tests).
    `freeze_gc`: once started, move every object alive (modules, store records) out of
    the cyclic collector's reach (`gc.freeze()`): collections then scan only what the
    traffic allocates (~20 % more datagrams/s in load/bench_sniffer.py). `serve` sets it.
    Raises ConfigError when a folder cannot be created or a listener cannot bind.
    """
    from .control.server import ControlServer
    from .service import Service
    from .sniffer import Sniffer
    from .store import SqliteStore
    from .waiters import Waiters

    if manage_logging:
        setup_logging(config.log.level, config.log.format, batched=True)
    _prepare_dirs(config)
    source = config.source or "<defaults>"
    cluster: Any = None
    if config.store.backend == "redis":  # DESIGN §10
        from .redis.cluster import Cluster

        try:
            cluster = Cluster.from_config(config.store)
        except ValueError as exc:
            raise ConfigError(str(exc), file=source, key="store") from None
        store: Any = cluster.store
    else:
        try:
            store = await trio.to_thread.run_sync(SqliteStore, config.store.path)
        except Exception as exc:
            raise ConfigError(
                f"cannot open the store: {exc}", file=source, key="store.path"
            ) from None

    running = Running(config=config, store=store)
    try:
        async with trio.open_nursery() as root:
            if manage_logging:
                root.start_soon(_flush_logs_every, FLUSH_INTERVAL)
            listeners = _Listeners(root)
            providers, close_providers = await _open_providers(root, config, pusher)
            running.providers = providers
            waiters = Waiters(config.push.max_waiting)
            running.waiters = waiters

            table = RegistrationTable(require_2xx=config.sniffer.require_2xx)
            sniffer_box: dict[str, Any] = {}
            stats_sources: dict[str, Callable[[], Mapping[str, Any]]] = {
                "sniffer": lambda: _call_stats(
                    getattr(sniffer_box.get("sniffer"), "statistics", None)
                ),
                "store": store.statistics,
            }
            if cluster is not None:
                await root.start(cluster.run)
                stats_sources["redis"] = cluster.statistics
            provider_stats = getattr(providers, "statistics", None)
            if provider_stats is not None:
                stats_sources["providers"] = provider_stats
            service = Service(store, providers, waiters, config.push_settings(), stats_sources)
            running.service = service
            on_registered = service.on_registered
            if cluster is not None:
                cluster.attach(service)
                on_registered = cluster.wrap_registered(on_registered)
            await listeners.start("service", _serve_service, service)

            async def serve_sniffer(
                cfg: Config, *, task_status: trio.TaskStatus[list[tuple[str, int]]]
            ) -> None:
                sniffer = Sniffer(
                    listen=cfg.sniffer.listen,
                    allow_from=cfg.sniffer.allow_from,
                    hep_auth_key=cfg.sniffer.hep_auth_key,
                    table=table,
                    store=store,
                    on_registered=on_registered,
                )
                sniffer_box["sniffer"] = sniffer
                await sniffer.serve(task_status=task_status)

            try:
                running.sniffer = await listeners.start("sniffer", serve_sniffer, config)
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen: {exc.strerror or exc}", file=source, key="sniffer.listen"
                ) from None

            control = ControlServer(
                service,
                unix_socket=None
                if config.control.unix_socket == "-"
                else config.control.unix_socket,
                unix_mode=config.control.mode,
                tcp=config.control.tcp_address,
            )
            try:
                control_bound = await listeners.start("control", _serve_control, control)
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen: {exc.strerror or exc}", file=source, key="control"
                ) from None
            running.control_socket, running.control_tcp = _control_addresses(control_bound)

            def statistics() -> dict[str, Any]:
                return _status(service, running)

            # Always measured (a few µs per push), exported while [metrics] listen is set.
            registry, push_metrics = new_registry(statistics)
            service.observers.append(push_metrics)
            running.registry = registry
            try:
                await _switch_hep(running, config)
            except OSError as exc:
                raise ConfigError(
                    f"cannot reach the HEP capture: {exc.strerror or exc}", file=source,
                    key="hep.capture",
                ) from None  # fmt: skip

            async def serve_metrics(
                cfg: Config, *, task_status: trio.TaskStatus[tuple[str, int]]
            ) -> None:
                address = cfg.metrics.address
                assert address is not None
                await MetricsServer(address[0], address[1], registry).serve(
                    task_status=task_status
                )

            if config.metrics.address is not None:
                try:
                    running.metrics = await listeners.start("metrics", serve_metrics, config)
                except OSError as exc:
                    raise ConfigError(
                        f"cannot listen: {exc.strerror or exc}", file=source, key="metrics.listen"
                    ) from None

            reloader = _Reloader(
                running, listeners, table, serve_sniffer, serve_metrics, manage_logging
            )
            running._reload = reloader.reload
            if handle_signals:
                await root.start(_signal_loop, running)

            log.info(
                "pusher-trio running",
                extra={
                    "fields": {
                        "sniffer": " ".join(f"{h}:{p}" for h, p in running.sniffer),
                        "control": running.control_socket or "-",
                        "tcp": _fmt(running.control_tcp),
                        "metrics": _fmt(running.metrics),
                        "store": config.store.path,
                    }
                },
            )
            if freeze_gc:
                gc.collect()
                gc.freeze()
            task_status.started(running)
            await running._stop.wait()

            # --- graceful stop ------------------------------------------------------------
            started = trio.current_time()
            log.info("stopping: closing listeners, answering waiting pushes ShuttingDown")
            listeners.cancel("sniffer")
            listeners.cancel("metrics")
            control.stop_accepting()  # its serve() answers, waits for the replies, closes
            ended = service.shutdown()
            with trio.move_on_after(REPLY_FLUSH + 0.25):
                await listeners.wait("control")
            listeners.cancel("control")
            listeners.cancel("service")
            with trio.move_on_at(started + SHUTDOWN_GRACE - 0.5) as scope:
                scope.shield = True
                with trio.move_on_after(PROVIDERS_CLOSE):
                    await close_providers()
                if cluster is not None:
                    with trio.move_on_after(REPLY_FLUSH):
                        await cluster.store.aflush()
            root.cancel_scope.cancel()
            log.info(
                "stopped",
                extra={
                    "fields": {"waits_ended": ended, "took_ms": _ms(trio.current_time() - started)}
                },
            )
    except BaseExceptionGroup as group:
        # A start-up failure we named (a listener that cannot bind) reaches the caller
        # as itself, not wrapped in the nursery's group, so `serve` can exit 2 with it.
        config_error = _find(group, ConfigError)
        if config_error is not None:
            raise config_error from None
        raise
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(2.0):
            try:
                await trio.to_thread.run_sync(store.flush, abandon_on_cancel=True)
            except Exception as exc:
                log.error("store flush failed at shutdown", extra={"fields": {"error": str(exc)}})
        store.close()
        if running.hep is not None:
            running.hep.close()
        flush_logs()


async def _flush_logs_every(interval: float) -> None:
    """The batched log lines of a quiet moment go out within `interval` (logs.BatchingHandler)."""
    while True:
        await trio.sleep(interval)
        flush_logs()


async def _switch_hep(running: Running, config: Config) -> None:
    """Start, replace or stop the HEP capture of `[hep]` (raises OSError: cannot resolve)."""
    from .homer import HepCapture

    new = None
    if config.hep.address is not None:
        new = HepCapture(config.hep.address, config.hep.capture_id)
        await new.open()
    old, running.hep = running.hep, new
    observers = running.service.observers
    if old is not None:
        observers.remove(old)
        old.close()
    if new is not None:
        observers.append(new)
        running.service.add_stats_source("hep", lambda: _hep_statistics(running))


def _hep_statistics(running: Running) -> dict[str, Any]:
    return {"capture": "-"} if running.hep is None else dict(running.hep.statistics())


def _find(group: BaseExceptionGroup[Any], kind: type[ConfigError]) -> ConfigError | None:
    for exc in group.exceptions:
        if isinstance(exc, kind):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _find(exc, kind)
            if found is not None:
                return found
    return None


def _fmt(address: tuple[str, int] | None) -> str:
    return "-" if address is None else f"{address[0]}:{address[1]}"


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


async def _serve_service(
    service: Any, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
) -> None:
    await service.run(task_status=task_status)


async def _serve_control(
    control: Any, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
) -> None:
    await control.serve(task_status=task_status)


def _control_addresses(bound: Any) -> tuple[str | None, tuple[str, int] | None]:
    """Whatever the control server reported -> (UNIX path, TCP (host, port))."""
    path: str | None = None
    tcp: tuple[str, int] | None = None
    items: list[Any]
    if isinstance(bound, Mapping):
        items = list(bound.values())
    elif isinstance(bound, list | tuple) and not (len(bound) == 2 and isinstance(bound[1], int)):
        items = list(bound)
    else:
        items = [bound]
    for item in items:
        if isinstance(item, str) and item:
            path = item
        elif isinstance(item, os.PathLike):
            path = os.fspath(item)
        elif isinstance(item, list | tuple) and len(item) >= 2 and isinstance(item[1], int):
            tcp = (str(item[0]), int(item[1]))
        elif hasattr(item, "unix") or hasattr(item, "tcp"):
            path = getattr(item, "unix", None) or path
            tcp = getattr(item, "tcp", None) or tcp
    return path, tcp


async def _open_providers(
    nursery: trio.Nursery, config: Config, pusher: Any
) -> tuple[Any, Callable[[], Any]]:
    """The provider pools (or a test's pusher) and how to close them."""

    async def nothing() -> None:
        return None

    if pusher is not None:
        close = getattr(pusher, "aclose", None)
        return pusher, close if close is not None else nothing
    from .providers import Providers

    providers: Any = Providers(
        ca_file=config.push.ca_file or None,
        idle_timeout=config.push.idle_timeout,
        proxy=load_proxy(config.push, config.source),
    )
    run_method = getattr(providers, "run", None)
    if run_method is not None:
        await nursery.start(run_method)
    elif hasattr(providers, "__aenter__"):
        await providers.__aenter__()
    return providers, providers.aclose


def _status(service: Any, running: Running) -> dict[str, Any]:
    """The `status` numbers (what /metrics exports)."""
    try:
        return dict(service.status())
    except Exception:
        log.exception("status failed")
        return {"uptime_s": round(time.time() - running.started_at, 3)}


class _Listeners:
    """Long-lived listener tasks, each in its own cancel scope (stop or restart one)."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._scopes: dict[str, tuple[trio.CancelScope, trio.Event]] = {}

    async def start(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        async def scoped(*, task_status: trio.TaskStatus[Any]) -> None:
            done = trio.Event()
            try:
                with trio.CancelScope() as scope:
                    self._scopes[name] = (scope, done)
                    await fn(*args, task_status=task_status)
            finally:
                done.set()

        return await self._nursery.start(scoped)

    def cancel(self, name: str) -> None:
        entry = self._scopes.pop(name, None)
        if entry is not None:
            entry[0].cancel()

    async def wait(self, name: str) -> None:
        """Wait until that task has returned (its scope is forgotten then)."""
        entry = self._scopes.get(name)
        if entry is not None:
            await entry[1].wait()
            self._scopes.pop(name, None)

    async def stop(self, name: str) -> None:
        """Cancel and wait until the task has closed its sockets (before binding again)."""
        entry = self._scopes.pop(name, None)
        if entry is not None:
            entry[0].cancel()
            await entry[1].wait()


async def _signal_loop(
    running: Running, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()  # handlers installed before anyone is told we run
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("SIGHUP: reloading the configuration")
                await running.reload()
            else:
                log.info(f"{signal.Signals(signum).name}: stopping")
                running.shutdown()
                return


class _Reloader:
    """Applies a new configuration to the parts that can change without a restart."""

    def __init__(
        self,
        running: Running,
        listeners: _Listeners,
        table: RegistrationTable,
        serve_sniffer: Callable[..., Any],
        serve_metrics: Callable[..., Any],
        manage_logging: bool,
    ) -> None:
        self.running = running
        self.listeners = listeners
        self.table = table
        self.serve_sniffer = serve_sniffer
        self.serve_metrics = serve_metrics
        self.manage_logging = manage_logging
        self.lock = trio.Lock()

    async def reload(self, new: Config | None = None) -> bool:
        async with self.lock:
            return await self._reload(new)

    async def _reload(self, new: Config | None) -> bool:
        running = self.running
        old = running.config
        if running.stopping:
            return False
        if new is None:
            if old.source is None:
                log.info("reload: no configuration file (embedded defaults); nothing to do")
                return True
            try:
                new = await trio.to_thread.run_sync(load_config, old.source)
            except ConfigError as exc:
                log.error(f"reload failed, keeping the running configuration: {exc}")
                return False
        if self.manage_logging and new.log != old.log:
            setup_logging(new.log.level, new.log.format, batched=True)
        if new.push != old.push:
            self._apply_push(new)
        self.table.require_2xx = new.sniffer.require_2xx  # the table reads it per message
        if attrs.evolve(new.sniffer, require_2xx=old.sniffer.require_2xx) != old.sniffer:
            # New addresses or rules: rebind (datagrams queued in the old socket are lost).
            await self.listeners.stop("sniffer")
            try:
                running.sniffer = await self.listeners.start("sniffer", self.serve_sniffer, new)
            except OSError as exc:
                log.error(
                    f"reload: sniffer cannot listen ({exc.strerror or exc}); back to the old one"
                )
                running.sniffer = await self.listeners.start("sniffer", self.serve_sniffer, old)
                new = attrs.evolve(new, sniffer=old.sniffer)
        if new.metrics != old.metrics:
            await self.listeners.stop("metrics")
            running.metrics = None
            if new.metrics.address is not None:
                try:
                    running.metrics = await self.listeners.start("metrics", self.serve_metrics, new)
                except OSError as exc:
                    log.error(f"reload: metrics cannot listen: {exc.strerror or exc}")
        if new.hep != old.hep:
            try:
                await _switch_hep(running, new)
            except OSError as exc:
                log.error(f"reload: HEP capture kept as it was: {exc.strerror or exc}")
                new = attrs.evolve(new, hep=old.hep)
        for section in ("control", "store"):
            if getattr(new, section) != getattr(old, section):
                log.warning(f"reload: [{section}] changes take effect at the next start")
        running.config = attrs.evolve(new, control=old.control, store=old.store)
        log.info("configuration reloaded", extra={"fields": {"file": new.source or "-"}})
        return True

    def _apply_push(self, new: Config) -> None:
        running = self.running
        running.waiters.max_waiting = new.push.max_waiting
        running.service.wait_timeout = new.push.wait_timeout
        running.service.max_wait = new.push.max_wait
        if new.push.ca_file != running.config.push.ca_file:
            log.warning("reload: push.ca_file takes effect at the next start")
        for key in ("idle_timeout", "proxy", "proxy_password_file"):
            if getattr(new.push, key) != getattr(running.config.push, key):
                log.warning(f"reload: push.{key} takes effect at the next start")


__all__ = ["Running", "run"]
