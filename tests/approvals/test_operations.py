"""approvals.operations: reviewer assignments (separation of duties) and business rules."""

from __future__ import annotations

import pytest
from guardian.models import UserObjectPermission

from approvals.models import AccessGrant
from approvals.operations import SelfGrant, reviewer_assignment_set
from audit.models import AuditEvent
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def test_nobody_grants_review_rights_to_themselves(support_agent, operator):
    with pytest.raises(SelfGrant) as refused:
        reviewer_assignment_set(agent=support_agent, reviewer=operator, granted=True, by=operator)
    assert refused.value.status_code == 403 and refused.value.code == "self_grant"
    assert not UserObjectPermission.objects.filter(user=operator).exists()
    assert not AccessGrant.objects.filter(user=operator, agent=support_agent).exists()
    assert not AuditEvent.objects.filter(action__startswith="approvals.reviewer.").exists()


def test_a_grant_records_who_made_it_and_a_revoke_forgets_it(support_agent, operator, reviewer):
    assert reviewer_assignment_set(agent=support_agent, reviewer=reviewer, granted=True, by=operator)
    grant = AccessGrant.objects.get(user=reviewer, agent=support_agent)
    assert grant.granted_by == operator and not grant.by_system
    # Revoking one's own right is no conflict of interest.
    assert reviewer_assignment_set(agent=support_agent, reviewer=reviewer, granted=False, by=reviewer)
    assert not AccessGrant.objects.filter(user=reviewer, agent=support_agent).exists()
    assert not reviewer.has_perm("agents.review_agent", support_agent)


def test_a_superuser_can_be_granted_review_of_their_own(support_agent, operator):
    """A superuser passes every has_perm, but only a right of their own lets them decide, so
    the console grants it (it used to say "no change")."""
    root = make_user("root", is_superuser=True, is_staff=True)
    assert reviewer_assignment_set(agent=support_agent, reviewer=root, granted=True, by=operator)
    assert AccessGrant.objects.get(user=root, agent=support_agent).granted_by == operator
    assert not reviewer_assignment_set(agent=support_agent, reviewer=root, granted=True, by=operator)
