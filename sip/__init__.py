"""Sans-IO SIP: message parser, header/URI/param grammar, HEPv3 codec (stdlib only)."""
