#include "engine/control.hpp"

#include <algorithm>
#include <chrono>

namespace lm::engine {

namespace {

// Receives within `timeout`; with a cancel, in slices so that a request is
// seen within one slice.
Result<transport::Message> recv_cancellable(transport::Channel& channel, transport::Timeout timeout,
                                            const Cancel* cancel) {
  if (!cancel) return transport::recv_message(channel, timeout);
  constexpr transport::Timeout kSlice(100);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (cancel->requested()) return cancel->error();
    auto left = std::chrono::duration_cast<transport::Timeout>(deadline - std::chrono::steady_clock::now());
    auto m = transport::recv_message(channel, std::clamp(left, transport::Timeout(0), kSlice));
    if (m || m.error().code != ETIMEDOUT || left <= kSlice) return m;
  }
}

}  // namespace

Result<transport::Message> expect_message(transport::Channel& control, std::initializer_list<transport::MsgType> types,
                                          transport::Timeout timeout, const Cancel* cancel) {
  auto m = LM_TRY(recv_cancellable(control, timeout, cancel));
  if (m.type == transport::MsgType::error) return transport::peer_error(m, control.name());
  for (auto t : types)
    if (m.type == t) return m;
  return Error::msg(strf("%s: unexpected %s message", control.name().c_str(),
                         std::string(transport::msg_type_name(m.type)).c_str()));
}

std::optional<Error> pending_peer_error(transport::Channel& control, transport::Timeout wait) {
  auto m = transport::recv_message(control, wait);
  if (m && m->type == transport::MsgType::error) return transport::peer_error(*m, control.name());
  return std::nullopt;
}

void send_error_best_effort(transport::Channel& control, uint16_t version, const Error& e) {
  transport::OutMessage m;
  transport::encode_error(m, version, e.code, e.message);
  (void)transport::send_message(control, m, transport::Timeout(1000));
}

Result<void> send_page_bitmaps(transport::Session& session, const dt::RangeList& pages, transport::Timeout timeout) {
  for (const auto& e : session.mappings().entries()) {
    uint64_t count = (e.end - e.start) / kPageSize;
    const std::vector<uint8_t> bits = dt::to_page_bitmap(pages, e.start, count);  // the message points into it
    transport::OutMessage m;
    transport::encode_dirty_bitmap(m, session.negotiated().version, e.start, count, bits);
    LM_TRY(transport::send_message(session.control(), m, timeout));
  }
  return ok();
}

}  // namespace lm::engine
