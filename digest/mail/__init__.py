"""Mail: the digest as an email, the signed links in it, and the engine that delivers it.

`render` renders it, `compose` makes the bytes that leave, `links` signs and reads the links'
tokens, `policy` reads an SMTP reply, `engine` claims due digests and sends them. May import the
ground modules, the store, ingest and rank; never the service or the CLI.
"""
