// Control-channel helpers shared by both sides of a migration.
#pragma once

#include <initializer_list>
#include <optional>

#include "common/error.hpp"
#include "dirtytrack/ranges.hpp"
#include "engine/cancel.hpp"
#include "transport/protocol.hpp"
#include "transport/session.hpp"

namespace lm::engine {

// The next message of one of `types`; a peer's error message becomes the
// error, any other type is a protocol error naming the channel. With a
// `cancel`, the wait ends early with its error once it is requested.
Result<transport::Message> expect_message(transport::Channel& control, std::initializer_list<transport::MsgType> types,
                                          transport::Timeout timeout, const Cancel* cancel = nullptr);

// The peer's error message, if one is already waiting on the channel (a
// broken bulk channel is often only the echo of the peer's own failure).
std::optional<Error> pending_peer_error(transport::Channel& control, transport::Timeout wait = transport::Timeout(300));

// One dirty_bitmap message per mapping of the session, a bit set for each
// page of `pages` (post-copy: the pages the destination still needs).
Result<void> send_page_bitmaps(transport::Session& session, const dt::RangeList& pages, transport::Timeout timeout);

// Tells the peer why we stop; best effort, bounded wait.
void send_error_best_effort(transport::Channel& control, uint16_t version, const Error& e);

}  // namespace lm::engine
