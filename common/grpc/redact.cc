#include "common/grpc/redact.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <cctype>
#include <memory>
#include <vector>

namespace tandem::rpc {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

constexpr char kRedacted[] = "[redacted]";

// A map<string, string> entry whose key names a secret ("tandem.csi.io/secret"
// in CSI's publish_context) keeps its key and loses its value.
void RedactSecretMapValues(Message* m, const FieldDescriptor* map_field) {
  const Reflection* r = m->GetReflection();
  const auto* entry_type = map_field->message_type();
  const FieldDescriptor* key = entry_type->map_key();
  const FieldDescriptor* value = entry_type->map_value();
  if (key->cpp_type() != FieldDescriptor::CPPTYPE_STRING ||
      value->cpp_type() != FieldDescriptor::CPPTYPE_STRING) {
    return;
  }
  for (int i = 0; i < r->FieldSize(*m, map_field); ++i) {
    Message* entry = r->MutableRepeatedMessage(m, map_field, i);
    const Reflection* er = entry->GetReflection();
    if (IsSecretFieldName(er->GetString(*entry, key))) er->SetString(entry, value, kRedacted);
  }
}

// Redacts `m` in place; appends the names of dropped secret fields to `dropped`.
void RedactInPlace(Message* m, std::vector<std::string>* dropped) {
  const Reflection* r = m->GetReflection();
  r->MutableUnknownFields(m)->Clear();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(*m, &fields);
  for (const FieldDescriptor* f : fields) {
    if (IsSecretFieldName(f->name())) {
      if (!f->is_repeated() && f->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
        r->SetString(m, f, kRedacted);
      } else {
        r->ClearField(m, f);
        dropped->push_back(f->full_name());
      }
      continue;
    }
    if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (f->is_map()) RedactSecretMapValues(m, f);
    if (f->is_repeated()) {
      // Map entries too: their value may be a message with secrets of its own.
      for (int i = 0; i < r->FieldSize(*m, f); ++i) {
        RedactInPlace(r->MutableRepeatedMessage(m, f, i), dropped);
      }
    } else {
      RedactInPlace(r->MutableMessage(m, f), dropped);
    }
  }
}

}  // namespace

bool IsSecretFieldName(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (std::string_view word : {"secret", "token", "password", "passwd", "credential"}) {
    if (lower.find(word) != std::string::npos) return true;
  }
  return false;
}

std::string RedactedText(const Message& message, size_t max_bytes) {
  // Redact a copy: the caller's message (a request a handler is about to
  // use) must not change.
  std::unique_ptr<Message> copy(message.New());
  copy->CopyFrom(message);
  std::vector<std::string> dropped;
  RedactInPlace(copy.get(), &dropped);
  std::string text = copy->ShortDebugString();
  if (!dropped.empty()) {
    text += text.empty() ? "[redacted:" : " [redacted:";
    for (size_t i = 0; i < dropped.size(); ++i) text += (i ? ", " : " ") + dropped[i];
    text += "]";
  }
  if (text.size() > max_bytes) {
    text.resize(max_bytes);
    text += "...";
  }
  return text;
}

}  // namespace tandem::rpc
