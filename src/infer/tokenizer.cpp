#include <filesystem>

#include "gdn/common.h"
#include "gdn/infer.h"

#ifdef GDN_HAVE_SENTENCEPIECE
#include <sentencepiece_processor.h>
#endif

namespace gdn::infer {
namespace {

// gdn's language models are byte-level: token id = byte value.
class ByteTokenizer final : public Tokenizer {
 public:
  std::string name() const override { return "bytes"; }
  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> ids;
    for (char c : text) ids.push_back(int32_t(uint8_t(c)));
    return ids;
  }
  std::string decode(int32_t id) const override { return id >= 0 && id < 256 ? std::string(1, char(id)) : ""; }
};

#ifdef GDN_HAVE_SENTENCEPIECE
class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    const auto status = sp_.Load(path);
    GDN_CHECK(status.ok(), "tokenizer ", path, ": ", status.ToString());
  }
  std::string name() const override { return "sentencepiece"; }
  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int> ids;
    const auto status = sp_.Encode(text, &ids);
    GDN_CHECK(status.ok(), "tokenizer: ", status.ToString());
    return std::vector<int32_t>(ids.begin(), ids.end());
  }
  std::string decode(int32_t id) const override {
    if (id < 0 || id >= sp_.GetPieceSize() || sp_.IsControl(id)) return "";
    if (sp_.IsByte(id)) {  // <0xAB> pieces stand for raw bytes
      const std::string piece = sp_.IdToPiece(id);
      return std::string(1, char(std::stoi(piece.substr(3, 2), nullptr, 16)));
    }
    // "▁" (U+2581) marks a word start.
    const std::string piece = sp_.IdToPiece(id), mark = "\xE2\x96\x81";
    std::string text;
    for (size_t i = 0; i < piece.size();) {
      const bool at_mark = piece.compare(i, mark.size(), mark) == 0;
      text += at_mark ? ' ' : piece[i];
      i += at_mark ? mark.size() : 1;
    }
    return text;
  }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};
#endif

}  // namespace

bool have_sentencepiece() {
#ifdef GDN_HAVE_SENTENCEPIECE
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& model_path, const Config& cfg) {
  namespace fs = std::filesystem;
  const fs::path p(model_path);
  const fs::path sp = fs::is_directory(p) ? p / "tokenizer.model" : fs::path();
  if (!sp.empty() && fs::exists(sp)) {
#ifdef GDN_HAVE_SENTENCEPIECE
    return std::make_unique<SentencePieceTokenizer>(sp.string());
#else
    fail("tokenizer ", sp.string(),
         ": this gdn was built without SentencePiece (install libsentencepiece-dev "
         "and rebuild), or pass --prompt-ids");
#endif
  }
  if (cfg.layout == Layout::gdn && cfg.vocab >= 256) return std::make_unique<ByteTokenizer>();
  return nullptr;
}

}  // namespace gdn::infer
