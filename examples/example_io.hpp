#pragma once
// Small file readers and writers shared by the examples (not part of losskit):
// numeric tables (plain or gzip-compressed CSV / whitespace-separated text),
// binary PGM images, and 8-bit grey PNG output. zlib does the (de)compression.
#include <zlib.h>

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace example_io {

/// The whole file, decompressed if it is gzip (gzread passes plain files through).
inline std::string read_file(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + path + " (run from the examples/ directory)");
  std::string text;
  std::array<char, 1 << 16> buf;
  int n;
  while ((n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()))) > 0) text.append(buf.data(), std::size_t(n));
  gzclose(f);
  if (n < 0) throw std::runtime_error("cannot decompress " + path);
  return text;
}

/// A table of numbers, one file line per matrix row; fields separated by
/// commas and/or blanks. Every line must have the same number of fields.
inline Eigen::MatrixXd read_table(const std::string& path) {
  const std::string text = read_file(path);
  std::vector<double> values;
  Eigen::Index rows = 0, cols = -1;
  const char* p = text.c_str();
  while (*p) {
    Eigen::Index fields = 0;
    while (*p && *p != '\n') {
      char* end;
      const double v = std::strtod(p, &end);
      if (end == p) {  // a separator
        if (*p != ',' && !std::isspace(static_cast<unsigned char>(*p)))
          throw std::runtime_error(path + ": unexpected character in line " + std::to_string(rows + 1));
        ++p;
        continue;
      }
      values.push_back(v);
      ++fields;
      p = end;
    }
    if (*p) ++p;
    if (fields == 0) continue;
    if (cols >= 0 && fields != cols) throw std::runtime_error(path + ": ragged line " + std::to_string(rows + 1));
    cols = fields;
    ++rows;
  }
  using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  return Eigen::Map<const RowMajor>(values.data(), rows, cols);
}

/// The rows of a table as columns (samples are columns), in an order
/// shuffled with `seed`, split into the first round(train_fraction·N) samples
/// and the rest.
struct TrainTest {
  Eigen::MatrixXd train, test;
};
inline TrainTest shuffle_split(const Eigen::MatrixXd& table, double train_fraction, unsigned seed) {
  std::vector<Eigen::Index> order(static_cast<std::size_t>(table.rows()));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(seed));
  const auto n_train = static_cast<Eigen::Index>(std::lround(train_fraction * double(table.rows())));
  TrainTest s{Eigen::MatrixXd(table.cols(), n_train), Eigen::MatrixXd(table.cols(), table.rows() - n_train)};
  for (Eigen::Index i = 0; i < table.rows(); ++i) {
    const auto row = table.row(order[static_cast<std::size_t>(i)]).transpose();
    if (i < n_train)
      s.train.col(i) = row;
    else
      s.test.col(i - n_train) = row;
  }
  return s;
}

/// A binary (P5) 8-bit PGM image as an H×W matrix with values in [0, 1].
inline Eigen::MatrixXd read_pgm(const std::string& path) {
  const std::string data = read_file(path);
  int width = 0, height = 0, maxval = 0, header = 0;
  if (std::sscanf(data.c_str(), "P5 %d %d %d%n", &width, &height, &maxval, &header) != 3 || maxval != 255 ||
      data.size() < std::size_t(header + 1) + std::size_t(width) * std::size_t(height))
    throw std::runtime_error(path + ": not an 8-bit binary PGM");
  const auto* pixels = reinterpret_cast<const unsigned char*>(data.data()) + header + 1;
  Eigen::MatrixXd image(height, width);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) image(y, x) = pixels[y * width + x] / 255.0;
  return image;
}

/// Writes an H×W matrix (values clamped to [0, 1]) as an 8-bit grey PNG.
inline void write_png(const std::string& path, const Eigen::MatrixXd& image) {
  const auto height = static_cast<std::uint32_t>(image.rows()), width = static_cast<std::uint32_t>(image.cols());
  std::vector<unsigned char> raw;  // each row: filter type 0, then the pixels
  raw.reserve(std::size_t(height) * (width + 1));
  for (std::uint32_t y = 0; y < height; ++y) {
    raw.push_back(0);
    for (std::uint32_t x = 0; x < width; ++x)
      raw.push_back(static_cast<unsigned char>(std::min(1.0, std::max(0.0, image(y, x))) * 255.0 + 0.5));
  }
  uLongf packed_size = compressBound(static_cast<uLong>(raw.size()));
  std::vector<unsigned char> packed(packed_size);
  if (compress2(packed.data(), &packed_size, raw.data(), static_cast<uLong>(raw.size()), 9) != Z_OK)
    throw std::runtime_error("zlib failed for " + path);
  packed.resize(packed_size);

  std::vector<unsigned char> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  auto put32 = [](std::vector<unsigned char>& out, std::uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<unsigned char>(v >> s));
  };
  auto chunk = [&](const char* type, const std::vector<unsigned char>& body) {
    put32(png, static_cast<std::uint32_t>(body.size()));
    const std::size_t start = png.size();
    png.insert(png.end(), type, type + 4);
    png.insert(png.end(), body.begin(), body.end());
    put32(png, static_cast<std::uint32_t>(crc32(0, png.data() + start, static_cast<uInt>(png.size() - start))));
  };
  std::vector<unsigned char> ihdr;
  put32(ihdr, width);
  put32(ihdr, height);
  ihdr.insert(ihdr.end(), {8, 0, 0, 0, 0});  // 8-bit, greyscale, deflate, no filter, no interlace
  chunk("IHDR", ihdr);
  chunk("IDAT", packed);
  chunk("IEND", {});

  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(png.data(), 1, png.size(), f) != png.size() || std::fclose(f) != 0)
    throw std::runtime_error("cannot write " + path);
}

}  // namespace example_io
