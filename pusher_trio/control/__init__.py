"""The control protocol (DESIGN §7): JSON-RPC 2.0 in netstrings.

* `jsonrpc`: pure framing, parsing and the error classes (codes as class attributes).
* `server`: `ControlServer(service, unix_socket, unix_mode, tcp)`; `await nursery.start(server.serve)`.
* `client`: `async with open_control(path_or_host_port) as c: await c.call(method, params)`.

Imports stay lazy here so that `jsonrpc` can be used without trio.
"""
