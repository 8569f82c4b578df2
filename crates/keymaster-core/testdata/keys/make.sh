#!/bin/sh
# Regenerates the key fixtures with the real tools (ssh-keygen, openssl). Run from this directory.
# Makes fresh random keys, so fingerprints.txt changes with every run. Only public halves are kept,
# plus a few throwaway private keys in private/ (used to prove PrivateKeyRejected and to sign).
set -eu
rm -rf tmp private sig refused && mkdir tmp private sig refused
rm -f ./*.pub ./*.pem fingerprints.txt message.txt
printf 'keymaster interop test message\n' > message.txt

spki_fp() { # SHA256: + unpadded base64 of SHA-256 over the DER SPKI, as openssl computes it
  printf 'SHA256:%s' "$(openssl pkey -pubin -in "$1" -outform DER | openssl dgst -sha256 -binary | base64 -w0 | tr -d '=')"
}
ssh_fp() { ssh-keygen -lf "$1" | awk '{print $2}'; }

# --- ssh-keygen keys: OpenSSH line, and (except ed25519, unsupported by ssh-keygen -e) PEM SPKI
for spec in "ed25519 ed25519" "ecdsa256 ecdsa -b 256" "ecdsa384 ecdsa -b 384" "rsa2048 rsa -b 2048" "rsa3072 rsa -b 3072"; do
  set -- $spec; name=ssh_$1; shift
  ssh-keygen -q -t "$@" -N '' -C "fixture $name" -f tmp/$name
  cp tmp/$name.pub $name.pub
  line="$name.pub ssh=$(ssh_fp $name.pub)"
  if [ "$name" != ssh_ed25519 ]; then
    ssh-keygen -e -m PKCS8 -f $name.pub > $name.pem
    line="$line pem=$name.pem spki=$(spki_fp $name.pem)"
  fi
  echo "$line" >> fingerprints.txt
done
cp tmp/ssh_ed25519 private/openssh_ed25519.key        # OPENSSH PRIVATE KEY
cp tmp/ssh_ecdsa256 private/openssh_ecdsa256.key      # OPENSSH PRIVATE KEY (ECDSA)
cp tmp/ssh_rsa2048 private/openssh_rsa2048.key        # OPENSSH PRIVATE KEY (RSA)

# --- openssl keys: PEM SPKI, OpenSSH line via ssh-keygen -i (ed25519 line assembled by hand)
openssl genpkey -algorithm ed25519 -out tmp/ossl_ed25519.key
openssl genpkey -algorithm x25519 -out tmp/ossl_x25519.key
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out tmp/ossl_p256.key
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out tmp/ossl_p384.key
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out tmp/ossl_rsa2048.key
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:4096 -out tmp/ossl_rsa4096.key
for k in ed25519 x25519 p256 p384 rsa2048 rsa4096; do
  openssl pkey -in tmp/ossl_$k.key -pubout -out ossl_$k.pem
  line="ossl_$k.pem spki=$(spki_fp ossl_$k.pem)"
  case $k in
    x25519) ;;
    ed25519)
      raw=$(openssl pkey -pubin -in ossl_$k.pem -outform DER | tail -c 32 | od -An -tx1 | tr -d ' \n')
      blob=$( (printf '\000\000\000\013ssh-ed25519\000\000\000\040'; printf '%s' "$raw" | sed 's/../\\x&/g' | xargs -0 printf) | base64 -w0)
      echo "ssh-ed25519 $blob" > ossl_$k.pub
      line="$line openssh=ossl_$k.pub ssh=$(ssh_fp ossl_$k.pub)";;
    *)
      ssh-keygen -i -m PKCS8 -f ossl_$k.pem > ossl_$k.pub
      line="$line openssh=ossl_$k.pub ssh=$(ssh_fp ossl_$k.pub)";;
  esac
  echo "$line" >> fingerprints.txt
done
# PKCS#1 "RSA PUBLIC KEY" forms of the RSA keys
for k in rsa2048 rsa4096; do
  openssl rsa -pubin -in ossl_$k.pem -RSAPublicKey_out -out ossl_${k}_pkcs1.pem 2>/dev/null
  echo "ossl_${k}_pkcs1.pem spki=$(spki_fp ossl_$k.pem)" >> fingerprints.txt
done

# Private keys in every format that must be refused
cp tmp/ossl_p256.key private/pkcs8_p256.pem                                   # PRIVATE KEY
cp tmp/ossl_ed25519.key private/pkcs8_ed25519.pem                             # PRIVATE KEY
cp tmp/ossl_rsa2048.key private/pkcs8_rsa2048.pem                             # PRIVATE KEY
cp tmp/ossl_x25519.key private/pkcs8_x25519.pem                               # PRIVATE KEY
openssl rsa -in tmp/ossl_rsa2048.key -traditional -out private/pkcs1_rsa2048.pem 2>/dev/null  # RSA PRIVATE KEY
openssl ec -in tmp/ossl_p256.key -out private/sec1_p256.pem 2>/dev/null                     # EC PRIVATE KEY
openssl pkcs8 -topk8 -in tmp/ossl_p256.key -v2 aes-256-cbc -passout pass:fixture -out private/encrypted_p256.pem  # ENCRYPTED PRIVATE KEY

# Signatures over message.txt made by openssl
openssl pkeyutl -sign -rawin -inkey tmp/ossl_ed25519.key -in message.txt -out sig/ossl_ed25519.sig
openssl dgst -sha256 -sign tmp/ossl_p256.key -out sig/ossl_p256.sig message.txt
openssl dgst -sha384 -sign tmp/ossl_p384.key -out sig/ossl_p384.sig message.txt
openssl dgst -sha256 -sign tmp/ossl_rsa2048.key -out sig/ossl_rsa2048.sig message.txt
openssl dgst -sha256 -sign tmp/ossl_rsa4096.key -out sig/ossl_rsa4096.sig message.txt
# and checked by openssl itself, so a failure in our verify is ours
openssl pkeyutl -verify -rawin -pubin -inkey ossl_ed25519.pem -in message.txt -sigfile sig/ossl_ed25519.sig >/dev/null
openssl dgst -sha256 -verify ossl_p256.pem -signature sig/ossl_p256.sig message.txt >/dev/null
openssl dgst -sha384 -verify ossl_p384.pem -signature sig/ossl_p384.sig message.txt >/dev/null
openssl dgst -sha256 -verify ossl_rsa2048.pem -signature sig/ossl_rsa2048.sig message.txt >/dev/null

# Public keys of algorithms/sizes that must be refused
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 2>/dev/null | openssl pkey -pubout -out refused/rsa1024.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:secp256k1 | openssl pkey -pubout -out refused/secp256k1.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 | openssl pkey -pubout -out refused/p521.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:brainpoolP256r1 | openssl pkey -pubout -out refused/brainpool256.pem
openssl genpkey -algorithm ed448 | openssl pkey -pubout -out refused/ed448.pem
openssl genpkey -algorithm RSA-PSS -pkeyopt rsa_keygen_bits:2048 2>/dev/null | openssl pkey -pubout -out refused/rsa_pss.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:explicit | openssl pkey -pubout -out refused/p256_explicit.pem
ssh-keygen -q -t ecdsa -b 521 -N '' -f tmp/p521 && cp tmp/p521.pub refused/ssh_p521.pub
openssl req -x509 -new -key tmp/ossl_p256.key -subj /CN=fixture -days 1 -out refused/certificate.pem
rm -rf tmp
