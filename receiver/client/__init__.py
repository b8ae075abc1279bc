"""The gateway side: ask the receiver whether a tenant's traffic may pass.

client = BreakerClient("http://receiver:8080", token=API_TOKEN)
app = web.Application(middlewares=[breaker_middleware(client, tenant_of=header("X-Tenant"))])
app.cleanup_ctx.append(client.cleanup_ctx)
"""

from receiver.client.breaker import BreakerClient, Decision, breaker_middleware, header

__all__ = ["BreakerClient", "Decision", "breaker_middleware", "header"]
