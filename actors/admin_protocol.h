#pragma once
// The admin console's wire protocol: the only messages that cross processes (between
// `ultraserve serve` and `ultraserve admin`, through CAF's middleman). Everything else in
// actors/messages.h stays inside one process.
//
//   client --(admin_atom, AdminCommand)--> admin actor --> AdminReply
//
// A command is its words as typed ("set max-batch 8"); the server parses and validates them,
// so an older client works with a newer server and there is one place that knows the rules.
// Every command carries the token: the middleman's BASP protocol has no authentication of its
// own, so each message is checked, not just the first one of a connection.
//
// Both sides must announce these types under the same names (add_admin_types) before their
// actor_system starts, or the middleman cannot deliver them.

#include <string>
#include <vector>

#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/meta/type_name.hpp>

namespace ultraserve {

using admin_atom = caf::atom_constant<caf::atom("admin")>;

struct AdminCommand {
  std::string token;
  std::vector<std::string> words;  // words[0] is the command
};

struct AdminReply {
  bool ok = true;     // false: refused, unknown command, bad arguments, or the action failed
  std::string text;   // for people (the shell prints it)
  std::string json;   // for scripts (--json prints it): an object; {"error": "..."} when !ok
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, AdminCommand& x) {
  return f(caf::meta::type_name("ultraserve.AdminCommand"), x.token, x.words);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, AdminReply& x) {
  return f(caf::meta::type_name("ultraserve.AdminReply"), x.ok, x.text, x.json);
}

// Announces the admin messages; call on the config of every process that speaks the protocol.
inline void add_admin_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<AdminCommand>("ultraserve.AdminCommand");
  cfg.add_message_type<AdminReply>("ultraserve.AdminReply");
}

// An error reply: the same message for people and for scripts.
AdminReply admin_error(const std::string& message);

}  // namespace ultraserve
