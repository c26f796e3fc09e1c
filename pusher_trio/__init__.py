"""pusher-trio: wakes sleeping mobile SIP apps with APNs/FCM pushes, next to Kamailio."""

__version__ = "0.1.0"
