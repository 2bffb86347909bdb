// http_files_test.cc - the static files beyond the plain ones, through
// the httpd program: precompressed copies (NAME.br, NAME.gz) chosen by
// Accept-Encoding (--no-precompressed), and directory listings
// (--autoindex). curl is the client where decoding matters; raw requests
// compare bytes and fields exactly.
#include "httpd_fixture.h"

#include <chrono>
#include <map>
#include <string>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace {

struct Response {
    int status = 0;
    std::map<std::string, std::string> fields;  // lower-case names
    std::string body;
};

// Sends one request (the method and target, then extra fields) on a new
// connection and reads the answer: its body by Content-Length, none for
// HEAD or a 304.
Response ask(const Httpd &h, const std::string &target, const std::string &extra = "",
             const std::string &method = "GET") {
    Client c(h.address());
    c.send(method + " " + target + " HTTP/1.1\r\nHost: x\r\n" + extra + "\r\n");
    Response r;
    std::string status_line = c.line();
    if (status_line.compare(0, 9, "HTTP/1.1 ") != 0) return r;
    r.status = atoi(status_line.c_str() + 9);
    for (std::string line; !(line = c.line()).empty() && line != "\r";) {
        if (line.back() == '\r') line.pop_back();
        size_t colon = line.find(':');
        std::string name = line.substr(0, colon);
        for (char &ch : name) ch = char(tolower((unsigned char)ch));
        r.fields[name] = line.substr(std::min(line.size(), line.find_first_not_of(' ', colon + 1)));
    }
    if (method != "HEAD" && r.status != 304 && r.fields.count("content-length"))
        r.body = c.bytes(size_t(atol(r.fields["content-length"].c_str())));
    return r;
}

// A docroot made at test time, removed with everything in it.
struct Site {
    std::string root;
    Site() {
        char name[] = "/tmp/prefork-files-XXXXXX";
        root = mkdtemp(name);
        chmod(root.c_str(), 0755);
    }
    ~Site() {
        std::string rm = "rm -rf " + root;
        if (system(rm.c_str()) != 0) {}
    }
    void file(const std::string &name, const std::string &text) const {
        FILE *f = fopen((root + "/" + name).c_str(), "w");
        if (!f) return;
        fwrite(text.data(), 1, text.size(), f);
        fclose(f);
    }
    void directory(const std::string &name) const { mkdir((root + "/" + name).c_str(), 0755); }
    // Sets the file's modification time (seconds since the epoch).
    void touch(const std::string &name, time_t when) const {
        struct timespec times[2] = {{when, 0}, {when, 0}};
        utimensat(AT_FDCWD, (root + "/" + name).c_str(), times, AT_SYMLINK_NOFOLLOW);
    }
    std::vector<std::string> args(std::vector<std::string> more = {}) const {
        std::vector<std::string> a = {"--listen", "unix:@/s.sock", "--status-path", "off"};
        a.insert(a.end(), more.begin(), more.end());
        a.push_back(root);
        return a;
    }
};

bool have(const char *program) { return system(("command -v " + std::string(program) + " >/dev/null 2>&1").c_str()) == 0; }

std::string curl(const Httpd &h, const std::string &args) {
    return run("curl -s --max-time 20 --unix-socket " + h.scratch() + "/s.sock " + args);
}

// Some text that compresses well, so that no copy is the file's size.
std::string script_text() {
    std::string text;
    for (int i = 0; i < 2000; i++) text += "console.log('line " + std::to_string(i) + "');\n";
    return text;
}

// The link targets of a listing, in order.
std::vector<std::string> links(const std::string &page) {
    std::vector<std::string> found;
    for (size_t at = 0; (at = page.find("<a href=\"", at)) != std::string::npos;) {
        at += 9;
        found.push_back(page.substr(at, page.find('"', at) - at));
    }
    return found;
}

// A directory to list: files, directories, a name that needs escaping, a
// dotfile, symlinks to a file and to a directory, a FIFO.
void make_listed_directory(const Site &site) {
    site.directory("list");
    site.directory("list/sub");
    site.directory("list/adir");
    site.file("list/b.txt", "bee");
    site.file("list/a.txt", "0123456789");
    site.file("list/<b>&\"x\".txt", "escaped\n");
    site.file("list/.hidden", "dotfile\n");
    site.file("list/sub/inner.txt", "inner\n");
    site.touch("list/a.txt", 981173100);  // 2001-02-03 04:05:00 UTC
    symlink("a.txt", (site.root + "/list/link.txt").c_str());
    symlink("sub", (site.root + "/list/linkdir").c_str());
    mkfifo((site.root + "/list/fifo").c_str(), 0644);
}

}  // namespace

// curl --compressed takes the copy gzip -k made, and decodes it to the
// file's bytes; the answer says what it is.
TEST(HttpPrecompressed, CurlGetsTheDecodedBytesOfTheGzipCopy) {
    NEED_HTTPD();
    if (!have("curl") || !have("gzip")) GTEST_SKIP() << "curl and gzip are needed (.ci/run installs curl)";
    Site site;
    std::string text = script_text();
    site.file("app.js", text);
    ASSERT_EQ(system(("gzip -k " + site.root + "/app.js").c_str()), 0);
    Httpd h(site.args());
    ASSERT_TRUE(h.running()) << h.stderr_text();
    EXPECT_EQ(curl(h, "--compressed http://x/app.js"), text);
    std::string head = curl(h, "--compressed -o /dev/null -D - http://x/app.js");
    EXPECT_NE(head.find("Content-Encoding: gzip\r\n"), std::string::npos) << head;
    EXPECT_NE(head.find("Content-Type: text/javascript; charset=utf-8\r\n"), std::string::npos) << head;
    EXPECT_NE(head.find("Vary: Accept-Encoding\r\n"), std::string::npos) << head;
    std::string gz = slurp(site.root + "/app.js.gz");
    EXPECT_NE(head.find("Content-Length: " + std::to_string(gz.size()) + "\r\n"), std::string::npos) << head;
    Response plain = ask(h, "/app.js");
    EXPECT_EQ(plain.body, text);
    EXPECT_EQ(plain.fields.count("content-encoding"), 0u);
    EXPECT_EQ(plain.fields["vary"], "Accept-Encoding");
    EXPECT_EQ(ask(h, "/app.js", "Accept-Encoding: gzip\r\n").body, gz);
}

// The same with brotli's own tool, when it is installed.
TEST(HttpPrecompressed, CurlGetsTheDecodedBytesOfTheBrotliCopy) {
    NEED_HTTPD();
    if (!have("curl") || !have("brotli") || !have("gzip"))
        GTEST_SKIP() << "curl, brotli and gzip are needed (.ci/run installs them)";
    if (run("curl -V").find("brotli") == std::string::npos) GTEST_SKIP() << "this curl cannot decode br";
    Site site;
    std::string text = script_text();
    site.file("app.js", text);
    ASSERT_EQ(system(("gzip -k " + site.root + "/app.js && brotli -k " + site.root + "/app.js").c_str()), 0);
    Httpd h(site.args());
    ASSERT_TRUE(h.running()) << h.stderr_text();
    EXPECT_EQ(curl(h, "--compressed http://x/app.js"), text);
    std::string head = curl(h, "--compressed -o /dev/null -D - http://x/app.js");
    EXPECT_NE(head.find("Content-Encoding: br\r\n"), std::string::npos) << "br goes before gzip: " << head;
    EXPECT_EQ(curl(h, "-H 'Accept-Encoding: br;q=0, gzip' --compressed http://x/app.js"), text);
    head = curl(h, "-H 'Accept-Encoding: br;q=0, gzip' -o /dev/null -D - http://x/app.js");
    EXPECT_NE(head.find("Content-Encoding: gzip\r\n"), std::string::npos) << "br;q=0 refuses br: " << head;
}

// Accept-Encoding read properly: q-values, q=0, "*", identity, x-gzip, case
// and spaces; br before gzip before the file at equal q. The copies here
// are fake, so that the bytes tell which file went.
TEST(HttpPrecompressed, AcceptEncodingChoosesTheCopy) {
    NEED_HTTPD();
    Site site;
    site.file("data.txt", "the plain file\n");
    site.file("data.txt.br", "fake brotli bytes");
    site.file("data.txt.gz", "fake gzip bytes, longer");
    Httpd h(site.args());
    ASSERT_TRUE(h.running()) << h.stderr_text();
    const std::string plain = "the plain file\n", br = "fake brotli bytes", gz = "fake gzip bytes, longer";
    struct Case { const char *accept; const std::string &body; };
    const Case cases[] = {
        {nullptr, plain},
        {"", plain},
        {"br", br},
        {"gzip", gz},
        {"gzip, br", br},
        {"gzip, deflate, br, zstd", br},
        {"gzip;q=1, br;q=0.5", gz},
        {"gzip ; q=0.8 , br ; Q=0.9", br},
        {"br;q=0, gzip", gz},
        {"br;q=0.000, gzip;q=0", plain},
        {"*", br},
        {"*;q=0.5, gzip", gz},
        {"*;q=0.5, identity", plain},
        {"*;q=0", plain},
        {"br;q=0.001", br},
        {"gzip;q=0.5, identity;q=0.4", gz},
        {"gzip;q=0.4, identity;q=0.5", plain},
        {"identity", plain},
        {"x-gzip", gz},
        {"GZIP", gz},
        {"deflate, zstd", plain},
        {"gzip;q=bogus", plain},
        {"gzip;q=1.5", plain},
        {"gzip;level=9", plain},
    };
    for (const Case &k : cases) {
        Response r = ask(h, "/data.txt", k.accept ? "Accept-Encoding: " + std::string(k.accept) + "\r\n" : "");
        std::string what = k.accept ? k.accept : "(no Accept-Encoding)";
        EXPECT_EQ(r.status, 200) << what;
        EXPECT_EQ(r.body, k.body) << what;
        EXPECT_EQ(r.fields["vary"], "Accept-Encoding") << what;
        EXPECT_EQ(r.fields["content-type"], "text/plain; charset=utf-8") << what;
        const char *coding = &k.body == &br ? "br" : &k.body == &gz ? "gzip" : nullptr;
        EXPECT_EQ(r.fields.count("content-encoding") ? r.fields["content-encoding"] : "(none)",
                  coding ? coding : "(none)") << what;
    }
}

// Each copy is a representation of its own: its ETag, its 304, its
// ranges, its HEAD.
TEST(HttpPrecompressed, TheCopyHasItsOwnETagRangesAnd304) {
    NEED_HTTPD();
    Site site;
    site.file("data.txt", "the plain file\n");
    site.file("data.txt.br", "fake brotli bytes");
    site.file("data.txt.gz", "fake gzip bytes, longer");
    ASSERT_EQ(system(("touch -r " + site.root + "/data.txt " + site.root + "/data.txt.br " + site.root +
                      "/data.txt.gz").c_str()),
              0) << "the same mtime, as gzip -k leaves it";
    Httpd h(site.args());
    ASSERT_TRUE(h.running()) << h.stderr_text();
    std::string plain = ask(h, "/data.txt").fields["etag"];
    std::string br = ask(h, "/data.txt", "Accept-Encoding: br\r\n").fields["etag"];
    std::string gz = ask(h, "/data.txt", "Accept-Encoding: gzip\r\n").fields["etag"];
    EXPECT_FALSE(plain.empty());
    EXPECT_NE(br, plain);
    EXPECT_NE(gz, plain);
    EXPECT_NE(gz, br);

    Response current = ask(h, "/data.txt", "Accept-Encoding: br\r\nIf-None-Match: " + br + "\r\n");
    EXPECT_EQ(current.status, 304);
    EXPECT_EQ(current.fields["etag"], br);
    EXPECT_EQ(current.fields["vary"], "Accept-Encoding");
    EXPECT_EQ(ask(h, "/data.txt", "If-None-Match: " + br + "\r\n").status, 200) << "the plain file is not the copy";
    EXPECT_EQ(ask(h, "/data.txt", "Accept-Encoding: gzip\r\nIf-None-Match: " + br + "\r\n").status, 200);

    Response part = ask(h, "/data.txt", "Accept-Encoding: br\r\nRange: bytes=5-10\r\n");
    EXPECT_EQ(part.status, 206);
    EXPECT_EQ(part.body, "brotli");
    EXPECT_EQ(part.fields["content-range"], "bytes 5-10/17");
    EXPECT_EQ(part.fields["content-encoding"], "br");
    Response stale = ask(h, "/data.txt", "Accept-Encoding: br\r\nRange: bytes=5-10\r\nIf-Range: " + plain + "\r\n");
    EXPECT_EQ(stale.status, 200) << "If-Range names the plain file, not the copy";
    EXPECT_EQ(stale.body, "fake brotli bytes");
    EXPECT_EQ(ask(h, "/data.txt", "Accept-Encoding: br\r\nRange: bytes=17-\r\n").status, 416);

    Response head = ask(h, "/data.txt", "Accept-Encoding: gzip\r\n", "HEAD");
    EXPECT_EQ(head.status, 200);
    EXPECT_EQ(head.fields["content-length"], "23");
    EXPECT_EQ(head.fields["content-encoding"], "gzip");
    EXPECT_EQ(head.fields["etag"], gz);
}

// Only a regular file beside the file, opened as files are, is a copy; a
// .gz asked for by name is itself, never a coding; a directory's
// index.html has its copies too.
TEST(HttpPrecompressed, OnlyARegularFileBesideIsACopy) {
    NEED_HTTPD();
    Site site;
    site.file("linked.txt", "plain linked\n");
    site.file("elsewhere", "not beside it\n");
    ASSERT_EQ(symlink("elsewhere", (site.root + "/linked.txt.gz").c_str()), 0);
    site.file("dir.txt", "plain dir\n");
    site.directory("dir.txt.br");
    site.file("archive.tar.gz", "an archive\n");
    site.file("archive.tar.gz.gz", "never");
    site.file("index.html", "<p>home</p>\n");
    site.file("index.html.gz", "fake gzip index");
    Httpd h(site.args());
    ASSERT_TRUE(h.running()) << h.stderr_text();
    EXPECT_EQ(ask(h, "/linked.txt", "Accept-Encoding: gzip\r\n").body, "plain linked\n") << "a symlink is no copy";
    EXPECT_EQ(ask(h, "/dir.txt", "Accept-Encoding: br\r\n").body, "plain dir\n") << "a directory is no copy";
    Response archive = ask(h, "/archive.tar.gz", "Accept-Encoding: gzip\r\n");
    EXPECT_EQ(archive.body, "an archive\n");
    EXPECT_EQ(archive.fields["content-type"], "application/gzip");
    EXPECT_EQ(archive.fields.count("content-encoding"), 0u);
    EXPECT_EQ(archive.fields.count("vary"), 0u);
    Response index = ask(h, "/", "Accept-Encoding: gzip\r\n");
    EXPECT_EQ(index.body, "fake gzip index");
    EXPECT_EQ(index.fields["content-type"], "text/html; charset=utf-8");
    EXPECT_EQ(index.fields["content-encoding"], "gzip");
    EXPECT_EQ(ask(h, "/").body, "<p>home</p>\n");
}

// --no-precompressed: the file itself for everyone, no Vary.
TEST(HttpPrecompressed, NoPrecompressedServesTheFileItself) {
    NEED_HTTPD();
    Site site;
    site.file("data.txt", "the plain file\n");
    site.file("data.txt.br", "fake brotli bytes");
    site.file("data.txt.gz", "fake gzip bytes, longer");
    Httpd h(site.args({"--no-precompressed"}));
    ASSERT_TRUE(h.running()) << h.stderr_text();
    Response r = ask(h, "/data.txt", "Accept-Encoding: gzip, br\r\n");
    EXPECT_EQ(r.body, "the plain file\n");
    EXPECT_EQ(r.fields.count("content-encoding"), 0u);
    EXPECT_EQ(r.fields.count("vary"), 0u);
    EXPECT_EQ(ask(h, "/data.txt.gz", "Accept-Encoding: gzip\r\n").body, "fake gzip bytes, longer");
}

// Off by default: a directory without index.html is 403, and shows nothing.
TEST(HttpAutoindex, OffByDefault) {
    NEED_HTTPD();
    Site site;
    make_listed_directory(site);
    Httpd h(site.args());
    ASSERT_TRUE(h.running()) << h.stderr_text();
    Response r = ask(h, "/list/");
    EXPECT_EQ(r.status, 403);
    EXPECT_EQ(r.body.find("a.txt"), std::string::npos) << r.body;
}

// The listing: directories first, then files, each sorted by name; names
// escaped, links percent-encoded; sizes and times; no dotfile, no
// symlink, no FIFO.
TEST(HttpAutoindex, ListsSortedEscapedWithoutDotfilesOrSymlinks) {
    NEED_HTTPD();
    Site site;
    make_listed_directory(site);
    Httpd h(site.args({"--autoindex"}));
    ASSERT_TRUE(h.running()) << h.stderr_text();
    Response r = ask(h, "/list/");
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.fields["content-type"], "text/html; charset=utf-8");
    const std::string &page = r.body;
    EXPECT_NE(page.find("<title>Index of /list/</title>"), std::string::npos) << page;
    std::vector<std::string> expected = {"../", "adir/", "sub/", "%3Cb%3E%26%22x%22.txt", "a.txt", "b.txt"};
    EXPECT_EQ(links(page), expected) << page;
    EXPECT_NE(page.find(">&lt;b&gt;&amp;&quot;x&quot;.txt</a>"), std::string::npos) << page;
    EXPECT_EQ(page.find("<b>"), std::string::npos) << "a name is never markup: " << page;
    EXPECT_NE(page.find(">a.txt</a></td><td>2001-02-03 04:05</td><td>10</td>"), std::string::npos) << page;
    EXPECT_NE(page.find(">b.txt</a></td><td>"), std::string::npos);
    EXPECT_NE(page.find("<td>3</td>"), std::string::npos) << page;
    EXPECT_NE(page.find(">sub/</a></td><td>"), std::string::npos) << page;
    for (const char *absent : {"hidden", "link", "fifo"}) EXPECT_EQ(page.find(absent), std::string::npos) << absent;

    Response root = ask(h, "/");
    EXPECT_EQ(root.status, 200);
    EXPECT_EQ(links(root.body), std::vector<std::string>{"list/"}) << "no ../ at the top: " << root.body;
}

// Every link of a listing leads where it says; a symlinked directory is
// not followed; HEAD has the length without the body; other methods 405;
// a directory with index.html still gets its index.
TEST(HttpAutoindex, LinksLeadToTheirEntriesAndOnlyGetAndHeadList) {
    NEED_HTTPD();
    Site site;
    make_listed_directory(site);
    site.directory("indexed");
    site.file("indexed/index.html", "<p>the index</p>\n");
    Httpd h(site.args({"--autoindex"}));
    ASSERT_TRUE(h.running()) << h.stderr_text();
    std::string page = ask(h, "/list/").body;
    for (const std::string &link : links(page))  // "../" as a client resolves it
        EXPECT_EQ(ask(h, link == "../" ? "/" : "/list/" + link).status, 200) << link;
    EXPECT_EQ(ask(h, "/list/%3Cb%3E%26%22x%22.txt").body, "escaped\n");
    Response sub = ask(h, "/list/sub/");
    EXPECT_EQ(links(sub.body), (std::vector<std::string>{"../", "inner.txt"})) << sub.body;
    EXPECT_EQ(ask(h, "/list/sub/inner.txt").body, "inner\n");
    EXPECT_EQ(ask(h, "/list/sub").status, 301);
    EXPECT_EQ(ask(h, "/list/linkdir/").status, 403) << "a symlink is not followed";
    EXPECT_EQ(ask(h, "/indexed/").body, "<p>the index</p>\n");

    Response head = ask(h, "/list/", "", "HEAD");
    EXPECT_EQ(head.status, 200);
    EXPECT_EQ(head.fields["content-length"], std::to_string(page.size()));
    Client c(h.address());
    c.send("HEAD /list/ HTTP/1.1\r\nHost: x\r\n\r\nGET /list/b.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    std::string both;
    c.until_eof(&both, 3000);
    EXPECT_EQ(both.find("<table>"), std::string::npos) << "HEAD sent a body: " << both;
    EXPECT_NE(both.find("\r\n\r\nbee"), std::string::npos) << both;
    Response post = ask(h, "/list/", "Content-Length: 0\r\n", "POST");
    EXPECT_EQ(post.status, 405);
    EXPECT_EQ(post.fields["allow"], "GET, HEAD");
}

// Both flags are read from a config file too, a name alone on its line.
TEST(HttpAutoindex, TheFlagsComeFromAConfigFileToo) {
    NEED_HTTPD();
    Site site;
    make_listed_directory(site);
    site.file("data.txt", "the plain file\n");
    site.file("data.txt.gz", "fake gzip bytes");
    site.file(".httpd.conf", "autoindex\nno-precompressed   # the plain files only\n");
    Httpd h(site.args({"--config", site.root + "/.httpd.conf"}));
    ASSERT_TRUE(h.running()) << h.stderr_text();
    EXPECT_EQ(ask(h, "/list/").status, 200);
    EXPECT_EQ(ask(h, "/data.txt", "Accept-Encoding: gzip\r\n").body, "the plain file\n");
}

/* The file cache (HttpOptions::file_cache): a worker answers small files
   from memory and reads them again once a second. These servers have one
   worker, so every request after the first for a file is answered from
   its cache. */
namespace {

std::vector<std::string> one_worker(const Site &site, std::vector<std::string> more = {}) {
    std::vector<std::string> a = {"--start-servers", "1", "--min-spare-servers", "1", "--max-spare-servers", "1",
                                  "--max-clients", "1"};
    a.insert(a.end(), more.begin(), more.end());
    return site.args(a);
}

double seconds_since(const std::chrono::steady_clock::time_point &start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Asks until the answer for target has the body (or, with body empty, the
// status) wanted, for at most 5 s: the seconds it took, or -1.
double seconds_until(const Httpd &h, const std::string &target, const std::string &body, int status = 200) {
    auto start = std::chrono::steady_clock::now();
    while (seconds_since(start) < 5) {
        Response r = ask(h, target);
        if (r.status == status && (body.empty() || r.body == body)) return seconds_since(start);
        usleep(20 * 1000);
    }
    return -1;
}

// An answer as text, without Date: what must not depend on the cache.
std::string describe(const Response &r) {
    std::string text = std::to_string(r.status) + "\n";
    for (const auto &field : r.fields)
        if (field.first != "date") text += field.first + ": " + field.second + "\n";
    return text + "\n" + r.body;
}

}  // namespace

// A file written again, and a file removed, are seen within a second.
TEST(HttpFileCache, AChangeOnDiskIsServedWithinASecond) {
    NEED_HTTPD();
    Site site;
    site.file("page.txt", "first version\n");
    Httpd h(one_worker(site));
    ASSERT_TRUE(h.running()) << h.stderr_text();
    ASSERT_EQ(ask(h, "/page.txt").body, "first version\n");
    ASSERT_EQ(ask(h, "/page.txt").body, "first version\n");
    site.file("page.txt", "second version, longer\n");
    double took = seconds_until(h, "/page.txt", "second version, longer\n");
    EXPECT_GE(took, 0) << "never served fresh";
    EXPECT_LT(took, 1.5);
    site.file("page.txt", "third version, longer\n");  // the same size
    took = seconds_until(h, "/page.txt", "third version, longer\n");
    EXPECT_GE(took, 0) << "never served fresh";
    EXPECT_LT(took, 1.5);
    unlink((site.root + "/page.txt").c_str());
    took = seconds_until(h, "/page.txt", "", 404);
    EXPECT_GE(took, 0) << "a removed file is still served";
    EXPECT_LT(took, 1.5);
    // A file over 16 KiB, kept as its descriptor: replaced, then removed.
    site.file("big.bin", std::string(40000, 'a'));
    ASSERT_EQ(ask(h, "/big.bin").body, std::string(40000, 'a'));
    ASSERT_EQ(ask(h, "/big.bin").body, std::string(40000, 'a'));
    site.file("big.bin.new", std::string(30000, 'b'));
    rename((site.root + "/big.bin.new").c_str(), (site.root + "/big.bin").c_str());
    took = seconds_until(h, "/big.bin", std::string(30000, 'b'));
    EXPECT_GE(took, 0) << "never served fresh";
    EXPECT_LT(took, 1.5);
    unlink((site.root + "/big.bin").c_str());
    took = seconds_until(h, "/big.bin", "", 404);
    EXPECT_GE(took, 0) << "a removed file is still served";
    EXPECT_LT(took, 1.5);
}

// A file answered once is answered again from memory, without the disk:
// renamed away just after, it is still served until its second is up.
// With --file-cache 0 every request opens the file.
TEST(HttpFileCache, ASecondRequestNeedsNoDiskAndZeroTurnsItOff) {
    NEED_HTTPD();
    Site site;
    const std::string small = "kept\n", big(20000, 'k');  // in memory, and as a descriptor
    for (const char *size : {"65536", "0"}) {
        Httpd h(one_worker(site, {"--file-cache", size}));
        ASSERT_TRUE(h.running()) << h.stderr_text();
        bool cached = std::string(size) != "0", seen = false;
        for (int attempt = 0; attempt < 5 && !seen; attempt++) {  // a stall past the second spoils a try
            site.file("kept.txt", small);
            site.file("kept.bin", big);
            auto start = std::chrono::steady_clock::now();
            ASSERT_EQ(ask(h, "/kept.txt").body, small);
            ASSERT_EQ(ask(h, "/kept.bin").body, big);
            rename((site.root + "/kept.txt").c_str(), (site.root + "/moved.txt").c_str());
            unlink((site.root + "/kept.bin").c_str());
            Response again = ask(h, "/kept.txt"), again_big = ask(h, "/kept.bin");
            seen = seconds_since(start) < 0.9;
            if (seen) {
                EXPECT_EQ(again.status, cached ? 200 : 404) << "--file-cache " << size;
                EXPECT_EQ(again_big.status, cached ? 200 : 404) << "--file-cache " << size;
                if (cached) {
                    EXPECT_EQ(again.body, small);
                    EXPECT_EQ(again_big.body, big);
                }
            }
            usleep(1100 * 1000);  // the entry's second is up: the next try loads it again
        }
        EXPECT_TRUE(seen) << "no try was quick enough";
    }
}

// Every answer for a file is the same from memory as from the disk:
// whole, HEAD, ranges, 416, 304 by ETag and by date, If-Range, the
// precompressed copies, a directory's index.html, files at and past the
// largest size kept (16 KiB), and a cache too small for all of them; and
// so are the access log's lines.
TEST(HttpFileCache, AnswersAreTheSameFromMemoryAsFromTheDisk) {
    NEED_HTTPD();
    Site site;
    site.file("data.txt", "the plain file\n");
    site.file("data.txt.br", "fake brotli bytes");
    site.file("data.txt.gz", "fake gzip bytes, longer");
    site.file("style.css", std::string(3000, 'c'));
    site.file("at-limit.bin", std::string(16384, 'a'));
    site.file("past-limit.bin", std::string(16385, 'p'));
    site.file("big.js", script_text());
    site.file("big.js.gz", std::string(20000, 'z'));  // a copy too big: the file is not kept
    site.directory("dir");
    site.file("dir/index.html", "<p>index</p>\n");
    ASSERT_EQ(system(("touch -d @981173100 " + site.root + "/data.txt*").c_str()), 0);
    const std::string when = "Sat, 03 Feb 2001 04:05:00 GMT", later = "Sun, 04 Feb 2001 04:05:00 GMT";
    Httpd disk(one_worker(site, {"--file-cache", "0", "--access-log", "@/access.log"}));
    Httpd memory(one_worker(site, {"--access-log", "@/access.log"}));
    Httpd small(one_worker(site, {"--file-cache", "20000", "--access-log", "@/access.log"}));
    for (Httpd *h : {&disk, &memory, &small}) ASSERT_TRUE(h->running()) << h->stderr_text();
    std::string etag = ask(disk, "/data.txt").fields["etag"];
    ASSERT_FALSE(etag.empty());
    struct Case { std::string target, extra, method; };
    const std::vector<Case> cases = {
        {"/data.txt", "", "GET"},
        {"/data.txt", "", "HEAD"},
        {"/data.txt", "Accept-Encoding: gzip, deflate, br\r\n", "GET"},
        {"/data.txt", "Accept-Encoding: gzip\r\n", "HEAD"},
        {"/data.txt", "Accept-Encoding: br;q=0, gzip;q=0\r\n", "GET"},
        {"/data.txt", "Range: bytes=4-8\r\n", "GET"},
        {"/data.txt", "Range: bytes=-3\r\n", "GET"},
        {"/data.txt", "Range: bytes=100-\r\n", "GET"},
        {"/data.txt", "Accept-Encoding: br\r\nRange: bytes=5-10\r\n", "GET"},
        {"/data.txt", "If-None-Match: " + etag + "\r\n", "GET"},
        {"/data.txt", "If-None-Match: \"other\"\r\n", "GET"},
        {"/data.txt", "If-Modified-Since: " + when + "\r\n", "GET"},
        {"/data.txt", "If-Modified-Since: " + later + "\r\n", "HEAD"},
        {"/data.txt", "Range: bytes=0-3\r\nIf-Range: " + etag + "\r\n", "GET"},
        {"/data.txt", "Range: bytes=0-3\r\nIf-Range: \"stale\"\r\n", "GET"},
        {"/data.txt.gz", "Accept-Encoding: gzip\r\n", "GET"},
        {"/style.css", "Accept-Encoding: gzip, br\r\n", "GET"},
        {"/at-limit.bin", "Range: bytes=16380-\r\n", "GET"},
        {"/at-limit.bin", "", "GET"},
        {"/past-limit.bin", "", "GET"},
        {"/big.js", "", "GET"},
        {"/big.js", "Accept-Encoding: gzip\r\n", "GET"},
        {"/dir/", "", "GET"},
        {"/dir", "", "GET"},
        {"/dir/index.html", "", "HEAD"},
        {"/missing.txt", "", "GET"},
        {"/data.txt", "", "POST"},
    };
    for (int round = 0; round < 3; round++)  // loaded, then from memory (small: evicted and loaded again)
        for (const Case &k : cases) {
            std::string from_disk = describe(ask(disk, k.target, k.extra, k.method));
            std::string what = k.method + " " + k.target + " " + k.extra + " (round " + std::to_string(round) + ")";
            EXPECT_EQ(describe(ask(memory, k.target, k.extra, k.method)), from_disk) << what;
            EXPECT_EQ(describe(ask(small, k.target, k.extra, k.method)), from_disk) << what;
        }
    auto log_without_times = [](const Httpd &h) {
        std::string log = slurp(h.scratch() + "/access.log"), out;
        for (size_t at = 0, end; at < log.size(); at = end + 1) {
            end = log.find('\n', at);
            if (end == std::string::npos) end = log.size();
            std::string line = log.substr(at, end - at);
            size_t open = line.find('['), close = line.find(']');
            if (open != std::string::npos && close != std::string::npos) line.erase(open, close - open + 1);
            out += line + "\n";
        }
        return out;
    };
    auto lines = [&](const Httpd &h) {
        std::string log = log_without_times(h);
        return long(std::count(log.begin(), log.end(), '\n'));
    };
    auto logged = [&](const Httpd &h, long want) { return eventually([&] { return lines(h) >= want; }, 5000); };
    long answers = 3 * long(cases.size());
    ASSERT_TRUE(logged(disk, answers + 1) && logged(memory, answers) && logged(small, answers));
    std::string disk_log = log_without_times(disk);
    disk_log.erase(0, disk_log.find('\n') + 1);  // the ETag request
    EXPECT_EQ(log_without_times(memory), disk_log);
    EXPECT_EQ(log_without_times(small), disk_log);
}

// More files than the cache holds, asked for in a shuffled order: entries
// are dropped from the front, the middle and the end of the store, the ones
// after them move down, and every answer is still the file, whole. Once
// with a store of 6000 bytes (a few entries at a time) and once with the
// default 64 KiB, where the bound of 64 entries is what drops them.
TEST(HttpFileCache, FilesComeBackWholeWhileOthersAreDroppedAroundThem) {
    NEED_HTTPD();
    Site site;
    const int files = 80;
    auto content = [](int i) {
        std::string text;
        for (int n = 0; text.size() < size_t(1 + i * 37 % 1900); n++) text += std::to_string(i) + ":" + std::to_string(n) + " ";
        return text;
    };
    for (int i = 0; i < files; i++) site.file("f" + std::to_string(i) + ".txt", content(i));
    site.file("big.bin", std::string(20000, 'b'));  // a descriptor among them
    for (const char *size : {"6000", "65536"}) {
        Httpd h(one_worker(site, {"--file-cache", size}));
        ASSERT_TRUE(h.running()) << h.stderr_text();
        unsigned seed = 12345;
        for (int n = 0; n < 400; n++) {
            seed = seed * 1103515245 + 12345;
            int i = int(seed >> 16) % (files + 1);
            std::string target = i == files ? "/big.bin" : "/f" + std::to_string(i) + ".txt";
            Response r = ask(h, target);
            ASSERT_EQ(r.status, 200) << target << " with --file-cache " << size;
            ASSERT_EQ(r.body, i == files ? std::string(20000, 'b') : content(i)) << target << " with --file-cache " << size;
            ASSERT_EQ(r.fields["content-length"], std::to_string(r.body.size())) << target;
        }
    }
}

// A big file's descriptor, kept by the cache, is let go once its second is
// up and the worker serves any other file: a file removed from the disk is
// not held open by the workers that served it.
TEST(HttpFileCache, ARemovedFileIsNotHeldOpen) {
    NEED_HTTPD();
    Site site;
    site.file("big.bin", std::string(40000, 'x'));
    site.file("other.txt", "other\n");
    Httpd h(one_worker(site));
    ASSERT_TRUE(h.running()) << h.stderr_text();
    ASSERT_EQ(ask(h, "/big.bin").status, 200);
    std::string children = slurp("/proc/" + std::to_string(h.pid()) + "/task/" + std::to_string(h.pid()) + "/children");
    pid_t worker = atoi(children.c_str());
    ASSERT_GT(worker, 0) << "no worker under " << h.pid();
    auto holds_removed_file = [&] {
        std::string fds = run("ls -l /proc/" + std::to_string(worker) + "/fd 2>/dev/null");
        return fds.find("big.bin (deleted)") != std::string::npos;
    };
    unlink((site.root + "/big.bin").c_str());
    EXPECT_TRUE(holds_removed_file()) << "the worker did not keep the descriptor: nothing to test";
    EXPECT_TRUE(eventually([&] { return ask(h, "/other.txt").status == 200 && !holds_removed_file(); }, 5000))
        << "the removed file is still open in worker " << worker;
}
