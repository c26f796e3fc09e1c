"""Local APNs and FCM stand-ins: strict HTTP/2 + TLS servers that answer like Apple and Google.

They ship in the package because `pusher-trio demo` runs on them; the tests and the
load drivers of the source checkout use the same ones. Nothing here is imported by
the service itself.
"""
