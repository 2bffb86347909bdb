// password_test.cc - the password hashes and PasswordFile (issue 13, Basic auth).
//
// Three kinds of vectors. Fixed, published ones: RFC 1321's MD5 suite,
// FIPS 180's SHA examples, Eric Young's Blowfish ECB set, the bcrypt
// vectors of Openwall's crypt_blowfish (wrapper.c), glibc's MD5-crypt
// test and Drepper's SHA-crypt specification. And vectors made at test
// time by the programs users make their files with: Debian's htpasswd
// (apache2-utils) and `openssl passwd`; a missing program skips its test
// (.ci/run installs both). bcrypt costs stay at 4 and 5 to keep this fast.
#include "prefork.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

// The primitives are internal to prefork.cc; these are their declarations there.
namespace prefork::detail {
enum class HashKind { md5, sha1, sha256, sha512 };
std::string hash_digest(HashKind kind, std::string_view data);
void blowfish_encrypt(std::string_view key, uint32_t *left, uint32_t *right);
}  // namespace prefork::detail

namespace {

using prefork::check_password;
using prefork::PasswordFile;
using prefork::PasswordVerdict;
using prefork::detail::HashKind;

std::string hex(const std::string &bytes) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned char ch : bytes) out += digits[ch >> 4], out += digits[ch & 15];
    return out;
}

std::string hex_digest(HashKind kind, const std::string &data) { return hex(prefork::detail::hash_digest(kind, data)); }

const std::string million_a(1000000, 'a');

TEST(PasswordHash, Md5OfRfc1321Suite) {
    EXPECT_EQ(hex_digest(HashKind::md5, ""), "d41d8cd98f00b204e9800998ecf8427e");
    EXPECT_EQ(hex_digest(HashKind::md5, "a"), "0cc175b9c0f1b6a831c399e269772661");
    EXPECT_EQ(hex_digest(HashKind::md5, "abc"), "900150983cd24fb0d6963f7d28e17f72");
    EXPECT_EQ(hex_digest(HashKind::md5, "message digest"), "f96b697d7cb7938d525a2f31aaf161d0");
    EXPECT_EQ(hex_digest(HashKind::md5, "abcdefghijklmnopqrstuvwxyz"), "c3fcd3d76192e4007dfb496cca67e13b");
    EXPECT_EQ(hex_digest(HashKind::md5, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"),
              "d174ab98d277d9f5a5611c2c9f419d9f");
    EXPECT_EQ(hex_digest(HashKind::md5, "12345678901234567890123456789012345678901234567890123456789012345678901234567890"),
              "57edf4a22be3c955ac49da2e2107b67a");
}

TEST(PasswordHash, ShaOfFipsExamples) {
    const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    EXPECT_EQ(hex_digest(HashKind::sha1, "abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    EXPECT_EQ(hex_digest(HashKind::sha1, two_blocks), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    EXPECT_EQ(hex_digest(HashKind::sha1, million_a), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    EXPECT_EQ(hex_digest(HashKind::sha256, "abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(hex_digest(HashKind::sha256, two_blocks), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    EXPECT_EQ(hex_digest(HashKind::sha256, million_a), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    EXPECT_EQ(hex_digest(HashKind::sha512, "abc"),
              "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
              "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
    EXPECT_EQ(hex_digest(HashKind::sha512, "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
                                           "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"),
              "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
              "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909");
    EXPECT_EQ(hex_digest(HashKind::sha512, million_a),
              "e718483d0ce769644e2e42c7bc15b4638e1f98b13b2044285632a803afa973eb"
              "de0ff244877ea60a4cb0432ce577c31beb009c5c2c49aa2e4eadb217ad8cc09b");
}

// Padding edges: lengths that just fit, or just miss, the room the length
// field leaves in the last block (digests from Python's hashlib).
TEST(PasswordHash, LengthsAroundThePaddingAgreeWithKnownDigests) {
    EXPECT_EQ(hex_digest(HashKind::sha256, std::string(55, 'a')),
              "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
    EXPECT_EQ(hex_digest(HashKind::sha256, std::string(56, 'a')),
              "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
    EXPECT_EQ(hex_digest(HashKind::md5, std::string(64, 'a')), "014842d480b571495a4a0363793f7367");
    EXPECT_EQ(hex_digest(HashKind::sha512, std::string(112, 'a')),
              "c01d080efd492776a1c43bd23dd99d0a2e626d481e16782e75d54c2503b5dc32"
              "bd05f0f1ba33e568b88fd2d970929b719ecbb152f58f130a407c8830604b70ca");
}

TEST(PasswordHash, BlowfishOfEricYoungsVectors) {
    struct { uint64_t key, plain, cipher; } vectors[] = {
        {0x0000000000000000, 0x0000000000000000, 0x4ef997456198dd78},
        {0xffffffffffffffff, 0xffffffffffffffff, 0x51866fd5b85ecb8a},
        {0x3000000000000000, 0x1000000000000001, 0x7d856f9a613063f2},
    };
    for (auto &v : vectors) {
        std::string key;
        for (int i = 7; i >= 0; i--) key += char(v.key >> (8 * i));
        uint32_t left = uint32_t(v.plain >> 32), right = uint32_t(v.plain);
        prefork::detail::blowfish_encrypt(key, &left, &right);
        EXPECT_EQ((uint64_t(left) << 32 | right), v.cipher) << std::hex << v.key;
    }
}

struct Vector {
    const char *password, *hash;
};

void expect_vectors(const std::vector<Vector> &vectors) {
    for (const Vector &v : vectors) {
        EXPECT_EQ(check_password(v.password, v.hash), PasswordVerdict::match) << v.password << " " << v.hash;
        EXPECT_EQ(check_password(std::string(v.password) + "x", v.hash), PasswordVerdict::mismatch) << v.hash;
    }
}

TEST(PasswordHash, BcryptOfOpenwallVectors) {
    expect_vectors({
        {"U*U", "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"},
        {"U*U*", "$2a$05$CCCCCCCCCCCCCCCCCCCCC.VGOzA784oUp/Z0DY336zx7pLYAy0lwK"},
        {"U*U*U", "$2a$05$XXXXXXXXXXXXXXXXXXXXXOAcXxm9kjPGEMsLznoKqmqw7tc8WCx4a"},
        {"", "$2a$05$CCCCCCCCCCCCCCCCCCCCC.7uG0VCzI2bS7j6ymqJi9CdcdxiRTWNy"},
        {"U*U", "$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"},
        {"U*U", "$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"},
        {"\xa3", "$2y$05$/OK.fbVrR/bpIqNJ5ianF.Sa7shbm4.OzKpvFnX1pQLmQW96oUlCq"},
    });
    // Only the first 72 bytes count: the rest of a longer password is ignored.
    const char *long_hash = "$2a$05$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui";
    std::string seventy_two = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    EXPECT_EQ(check_password(seventy_two, long_hash), PasswordVerdict::match);
    EXPECT_EQ(check_password(seventy_two + "chars after 72 are ignored", long_hash), PasswordVerdict::match);
    EXPECT_EQ(check_password(seventy_two.substr(0, 71), long_hash), PasswordVerdict::mismatch);
}

TEST(PasswordHash, Md5CryptOfGlibcsVector) {
    expect_vectors({
        {"Hello world!", "$1$saltstri$YMyguxXMBpd2TEZ.vS/3q1"},
        // Made once with `openssl passwd -apr1 -salt saltstri` (OpenSSL 3.0.19).
        {"Hello world!", "$apr1$saltstri$aGfuB7Lcvs2TUeFTqUVfN0"},
        {"a password longer than sixteen bytes", "$apr1$12345678$73hG3Nj0llBBNcNjFBzc4/"},
    });
    EXPECT_EQ(check_password("", "$1$$qRPK7m23GJusamGpoGLby/"), PasswordVerdict::match);
}

// Drepper's vectors with rounds=77777 and 123456 are left out: under
// qemu-user (make cross-test) they took seconds each.
TEST(PasswordHash, ShaCryptOfDreppersVectors) {
    expect_vectors({
        {"Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"},
        {"Hello world!", "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"},
        {"This is just a test", "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5"},
        {"a very much longer text to encrypt.  This one even stretches over morethan one line.",
         "$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1"},
        {"Hello world!",
         "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"},
        {"Hello world!", "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/"
                         "UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."},
        {"a very much longer text to encrypt.  This one even stretches over morethan one line.",
         "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7Um"
         "JEiDwGqd8p4ur1"},
    });
    // rounds below 1000 count as 1000, as the specification says.
    EXPECT_EQ(check_password("the minimum number is still observed",
                             "$5$rounds=10$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC"),
              PasswordVerdict::match);
}

TEST(PasswordHash, ShaBase64OfFipsVector) {
    expect_vectors({{"abc", "{SHA}qZk+NkcGgWq6PiVxeFDCbJzQ2J0="}});
}

TEST(PasswordHash, PlaintextUnknownAndMalformedEntriesAreNeverMatched) {
    const char *entries[] = {
        "secret",                                                      // plaintext
        "",                                                            // empty
        "abJnggxhB/yWI",                                               // DES crypt
        "$3$$8846f7eaee8fb117ad06bdd830b7586c",                        // NT hash
        "$2x$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",  // crypt_blowfish's buggy variant
        "$2a$03$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",  // cost below 4
        "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOe",   // short
        "$2a$05$CCCCCCCCCCCCCCCCCCCC!.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",  // not base64
        "$1$saltstri$YMyguxXMBpd2TEZ.vS/3q",                           // short
        "$1$saltstring$YMyguxXMBpd2TEZ.vS/3q1",                        // salt over 8
        "$1$saltstri",                                                 // no hash
        "$5$rounds=$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5",
        "$5$saltstringsaltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5",
        "{SHA}qZk+NkcGgWq6PiVxeFDCbJzQ2J0",
    };
    for (const char *entry : entries) {
        EXPECT_EQ(check_password(entry, entry), PasswordVerdict::unusable) << entry;
        EXPECT_EQ(check_password("secret", entry), PasswordVerdict::unusable) << entry;
    }
}

// The output of a command, or "" when it fails.
std::string run(const std::string &command) {
    std::string out;
    FILE *pipe = popen(command.c_str(), "r");
    if (!pipe) return out;
    char buffer[512];
    size_t n;
    while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
    if (pclose(pipe) != 0) return "";
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    return out;
}

bool have(const char *program) { return !run(std::string("command -v ") + program).empty(); }

// Passwords with the bytes a shell would mangle left out (they go through
// single quotes): an empty one, a long one, spaces and punctuation.
const char *const made_passwords[] = {"", "p", "correct horse battery staple", "tr0ub4dor&3!\"$%",
                                      "0123456789012345678901234567890123456789012345678901234567890123456789-over-72"};

void expect_made(const std::string &hash, const std::string &password) {
    ASSERT_FALSE(hash.empty());
    EXPECT_EQ(check_password(password, hash), PasswordVerdict::match) << hash;
    EXPECT_EQ(check_password("!" + password, hash), PasswordVerdict::mismatch) << hash;  // bcrypt reads 72 bytes
    EXPECT_EQ(check_password("wrong", hash), PasswordVerdict::mismatch) << hash;
}

TEST(PasswordHash, HtpasswdsHashesOfEveryScheme) {
    if (!have("htpasswd")) GTEST_SKIP() << "htpasswd is not installed (Debian: apache2-utils)";
    const char *flags[] = {"-B -C 4", "-B -C 5", "-m", "-2", "-5", "-s"};
    for (const char *flag : flags) {
        for (const char *password : made_passwords) {
            std::string line = run(std::string("htpasswd -nb ") + flag + " someone '" + password + "'");
            SCOPED_TRACE(std::string(flag) + " " + line);
            ASSERT_EQ(line.rfind("someone:", 0), 0u);
            expect_made(line.substr(8), password);
        }
    }
}

TEST(PasswordHash, OpensslPasswdsHashesOfEveryScheme) {
    if (!have("openssl")) GTEST_SKIP() << "openssl is not installed";
    const char *flags[] = {"-1", "-apr1", "-5", "-6", "-1 -salt ab", "-apr1 -salt 12345678", "-5 -salt saltsaltsaltsalt",
                           "-6 -salt 'rounds=1234$short'"};
    for (const char *flag : flags) {
        for (const char *password : made_passwords) {
            std::string hash = run(std::string("openssl passwd ") + flag + " '" + password + "'");
            SCOPED_TRACE(std::string(flag) + " " + hash);
            if (hash == "<NULL>") continue;  // OpenSSL 3.0's -5 and -6 cannot hash an empty password
            expect_made(hash, password);
        }
    }
}

// A scratch directory for password files, removed at the end.
class PasswordFileTest : public ::testing::Test {
protected:
    void SetUp() override {
        char pattern[] = "/tmp/prefork-password-XXXXXX";
        ASSERT_NE(mkdtemp(pattern), nullptr);
        dir_ = pattern;
        path_ = dir_ + "/htpasswd";
    }
    void TearDown() override { run("rm -rf '" + dir_ + "'"); }

    // Replaces the file as editors and htpasswd do: a new file renamed over it.
    void write_file(const std::string &text) {
        std::string temporary = path_ + ".new";
        FILE *f = fopen(temporary.c_str(), "w");
        ASSERT_NE(f, nullptr);
        fputs(text.c_str(), f);
        fclose(f);
        ASSERT_EQ(rename(temporary.c_str(), path_.c_str()), 0);
    }

    std::string dir_, path_;
};

// Published hashes of known passwords, one of each scheme family.
const std::string alice = "alice:$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW\n";  // U*U
const std::string bob = "bob:$1$saltstri$YMyguxXMBpd2TEZ.vS/3q1\n";                             // Hello world!
const std::string carol = "carol:{SHA}qZk+NkcGgWq6PiVxeFDCbJzQ2J0=\n";                           // abc

TEST_F(PasswordFileTest, ChecksEachUsersEntry) {
    write_file(alice + bob + carol);
    PasswordFile file(path_);
    EXPECT_EQ(file.refresh(), 0);
    EXPECT_EQ(file.users(), 3u);
    EXPECT_EQ(file.check("alice", "U*U"), PasswordVerdict::match);
    EXPECT_EQ(file.check("bob", "Hello world!"), PasswordVerdict::match);
    EXPECT_EQ(file.check("carol", "abc"), PasswordVerdict::match);
    EXPECT_EQ(file.check("carol", "U*U"), PasswordVerdict::mismatch);
    EXPECT_NE(file.error().find("carol"), std::string::npos) << file.error();
    EXPECT_EQ(file.error().find("U*U"), std::string::npos) << "the password never reaches the log";
    EXPECT_EQ(file.check("dave", "abc"), PasswordVerdict::unknown_user);
    EXPECT_NE(file.error().find("dave"), std::string::npos) << file.error();
    EXPECT_EQ(file.check("", "abc"), PasswordVerdict::unknown_user);
}

TEST_F(PasswordFileTest, SkipsCommentsBlankAndMalformedLinesAndKeepsTheFirstOfADuplicate) {
    write_file("# the admins\n\n" + alice + "no colon here\n:nobody\r\n" +
               "bob:$1$saltstri$YMyguxXMBpd2TEZ.vS/3q1:a comment field\r\n" + "alice:{SHA}qZk+NkcGgWq6PiVxeFDCbJzQ2J0=\n" +
               "#carol:{SHA}qZk+NkcGgWq6PiVxeFDCbJzQ2J0=");
    PasswordFile file(path_);
    EXPECT_EQ(file.refresh(), 0);
    EXPECT_EQ(file.users(), 3u) << "alice twice, bob";
    EXPECT_EQ(file.check("alice", "U*U"), PasswordVerdict::match);
    EXPECT_EQ(file.check("alice", "abc"), PasswordVerdict::mismatch);
    EXPECT_EQ(file.check("bob", "Hello world!"), PasswordVerdict::match);
    EXPECT_EQ(file.check("#carol", "abc"), PasswordVerdict::unknown_user);
    EXPECT_EQ(file.check("no colon here", ""), PasswordVerdict::unknown_user);
}

TEST_F(PasswordFileTest, RefusesAPlaintextEntryAndSaysWhereItIs) {
    write_file(alice + "plain:secret\n");
    PasswordFile file(path_);
    EXPECT_EQ(file.check("plain", "secret"), PasswordVerdict::unusable);
    EXPECT_NE(file.error().find("plain"), std::string::npos) << file.error();
    EXPECT_NE(file.error().find("line 2"), std::string::npos) << file.error();
    EXPECT_EQ(file.error().find("secret"), std::string::npos) << file.error();
}

TEST_F(PasswordFileTest, AnUnreadableFileRefusesEveryone) {
    PasswordFile file(path_);
    EXPECT_EQ(file.refresh(), -1);
    EXPECT_NE(file.error().find(path_), std::string::npos) << file.error();
    EXPECT_EQ(file.check("alice", "U*U"), PasswordVerdict::unusable);
    write_file(alice);
    EXPECT_EQ(file.check("alice", "U*U"), PasswordVerdict::match);
    ASSERT_EQ(unlink(path_.c_str()), 0);
    EXPECT_EQ(file.check("alice", "U*U"), PasswordVerdict::unusable) << "a removed file is not remembered";
}

TEST_F(PasswordFileTest, SeesTheFileChangeOnDisk) {
    write_file(alice + bob);
    PasswordFile file(path_);
    EXPECT_EQ(file.check("carol", "abc"), PasswordVerdict::unknown_user);
    EXPECT_EQ(file.check("bob", "Hello world!"), PasswordVerdict::match);
    write_file(alice + carol);
    EXPECT_EQ(file.check("carol", "abc"), PasswordVerdict::match);
    EXPECT_EQ(file.check("bob", "Hello world!"), PasswordVerdict::unknown_user) << "a removed user is refused";
}

TEST_F(PasswordFileTest, TheMemoryOfVerifiedPasswordsAcceptsNoOther) {
    write_file(alice);
    PasswordFile file(path_);
    EXPECT_EQ(file.check("alice", "U*U"), PasswordVerdict::match);
    EXPECT_EQ(file.check("alice", "U*U"), PasswordVerdict::match);
    EXPECT_EQ(file.check("alice", "U*U*"), PasswordVerdict::mismatch);
    EXPECT_EQ(file.check("alice", ""), PasswordVerdict::mismatch);
    EXPECT_EQ(file.check("alice", "U*U"), PasswordVerdict::match);
}

TEST_F(PasswordFileTest, AChangedPasswordIsCheckedAfreshNotRemembered) {
    write_file(alice);
    PasswordFile file(path_);
    EXPECT_EQ(file.check("alice", "U*U"), PasswordVerdict::match);
    // alice's password becomes "U*U*"; the file keeps its size, so only the
    // inode and times tell the versions apart.
    write_file("alice:$2y$05$CCCCCCCCCCCCCCCCCCCCC.VGOzA784oUp/Z0DY336zx7pLYAy0lwK\n");  // U*U*
    EXPECT_EQ(file.check("alice", "U*U"), PasswordVerdict::mismatch);
    EXPECT_EQ(file.check("alice", "U*U*"), PasswordVerdict::match);
}

TEST_F(PasswordFileTest, ReadsAFileMadeByHtpasswd) {
    if (!have("htpasswd")) GTEST_SKIP() << "htpasswd is not installed (Debian: apache2-utils)";
    ASSERT_FALSE(run("htpasswd -cbB -C 4 '" + path_ + "' alice 'alice pass' 2>&1").empty());
    ASSERT_FALSE(run("htpasswd -bm '" + path_ + "' bob bobpass 2>&1").empty());
    PasswordFile file(path_);
    EXPECT_EQ(file.check("alice", "alice pass"), PasswordVerdict::match);
    EXPECT_EQ(file.check("bob", "bobpass"), PasswordVerdict::match);
    EXPECT_EQ(file.check("bob", "alice pass"), PasswordVerdict::mismatch);
    ASSERT_FALSE(run("htpasswd -D '" + path_ + "' bob 2>&1").empty());
    EXPECT_EQ(file.check("bob", "bobpass"), PasswordVerdict::unknown_user);
    EXPECT_EQ(file.check("alice", "alice pass"), PasswordVerdict::match);
}

}  // namespace
