"""Security for community deployments: a private CA, enrollment, identities, chain
verification, signed commands, encryption at rest and the audit event model.

Modules (import them directly): :mod:`security.errors` (the exception tree),
:mod:`security.ca`, :mod:`security.identity`, :mod:`security.verify`, :mod:`security.tokens`,
:mod:`security.commands`, :mod:`security.replay`, :mod:`security.at_rest`,
:mod:`security.audit`. Pure library: it imports no runtime package of the project.
"""
