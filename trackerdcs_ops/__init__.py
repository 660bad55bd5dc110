"""Deployment and operations tooling, run from a checkout on the host, never inside the services' images.

Manifests (:mod:`.deploytools`), the Mosquitto ACL (:mod:`.acl`), backups and restores (:mod:`.backup`), operator
UI logins (:mod:`.uiusers`), and how these tools find the checkout (:mod:`.checkout`).
"""
