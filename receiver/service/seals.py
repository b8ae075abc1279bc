"""Audit sealing, one round per call (the app runs it every RECEIVER_AUDIT_SEAL_SECONDS)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.db import seals
from receiver.db.transaction import in_transaction
from receiver.domain.seal import Candidate, Seal


class AuditSealer:
    """Keeps this replica's candidate between rounds (domain.seal.Candidate has the rule):
    rows are sealed one to two intervals after they were written."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.candidate: Candidate | None = None

    async def run_once(self) -> Seal | None:
        async def work(session: AsyncSession) -> tuple[Seal | None, Candidate | None]:
            return await seals.seal_round(session, self.candidate)

        seal, self.candidate = await in_transaction(self.sessions, work, what="audit seal")
        return seal
