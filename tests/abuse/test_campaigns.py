"""Issue 14, case 7: UpdateCampaign with etags the store cannot hold is INVALID_ARGUMENT with a
message about etags (was UNKNOWN with a traceback, or UNAVAILABLE showing SQLite's error)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2
from voiceagent.v1 import campaigns_pb2 as cpb
from voiceagent.v1 import campaigns_pb2_grpc as cpb_grpc

from tests.abuse.conftest import TOKEN, ServerProcess

METADATA = (("authorization", f"Bearer {TOKEN}"),)


@pytest.mark.parametrize("etag", ["²", "9" * 5000, "9" * 20, "-1", " 1", "1e3", "0x10"])
def test_an_etag_the_store_cannot_hold_is_invalid_argument(
    server: ServerProcess, etag: str
) -> None:
    stub = cpb_grpc.CampaignsStub(grpc.insecure_channel(server.target))
    created = stub.CreateCampaign(
        cpb.CreateCampaignRequest(campaign=cpb.Campaign(name="etags")), metadata=METADATA
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub.UpdateCampaign(
            cpb.UpdateCampaignRequest(
                campaign=cpb.Campaign(id=created.id, name="renamed", etag=etag),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            metadata=METADATA,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert "is not an etag this server returned" in details
    assert "sqlite" not in details.lower() and len(details) < 300
    # The right etag still works.
    stub.UpdateCampaign(
        cpb.UpdateCampaignRequest(
            campaign=cpb.Campaign(id=created.id, name="renamed", etag=created.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        ),
        metadata=METADATA,
    )
