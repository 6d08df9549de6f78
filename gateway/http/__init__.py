"""HTTP: the routes, their dependencies, the forms they read, the views they answer with, auth and
rate limits, the middleware, the OpenAPI document and the playground page.

May import every other gateway package; only gateway.app imports it.
"""
