{
  "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
  "verificationMaterial": {
    "publicKey": {
      "hint": "fee967477d01d313d07242ccd328e2bb0bd94a74f170aec30bd4df7bf6e2fe20"
    },
    "tlogEntries": []
  },
  "dsseEnvelope": {
    "payload": "eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEiLCJzdWJqZWN0IjpbeyJuYW1lIjoiYmFzZSIsImRpZ2VzdCI6eyJzaGEyNTYiOiJiOTg4OGY0MTA5ZDMwYThiOGM4ZTA3YzUwNDM1YjE2YWExYjEzODFjZWM2ODRiOWI0MjkzMWFjOWE4YWI3NWVlIn19XSwicHJlZGljYXRlVHlwZSI6Imh0dHBzOi8vbW9kZWxfc2lnbmluZy9zaWduYXR1cmUvdjEuMCIsInByZWRpY2F0ZSI6eyJyZXNvdXJjZXMiOlt7ImFsZ29yaXRobSI6InNoYTI1NiIsImRpZ2VzdCI6ImVhNTczZTgzNGRiZjA3YmE5OTNiODA5MzdhNzRhOTg2MzBjYmM1NWYxYzBhYzcxOGZhYWJiNGI4N2YxYjYzOTkiLCJuYW1lIjoiY29uZmlnLmpzb24ifSx7ImFsZ29yaXRobSI6InNoYTI1NiIsImRpZ2VzdCI6ImZjMWYwMDc3ODkyYTE3ZjhhNWUxMDA0OTZiYWI0MjNhYmQyYjFjNWY1OGM5NzBiMWY4NjM4NmZkNGUyMGIyNGYiLCJuYW1lIjoibW9kZWwuc2FmZXRlbnNvcnMifSx7ImFsZ29yaXRobSI6InNoYTI1NiIsImRpZ2VzdCI6ImIxYjE5ZWUwYTQ5NWExZmEwODE4YmIxNjg2OWJiNzllMTJmYjk1NzkxNzg4OTYyYTcwYWI3MjkzMzY2ZDFiYmMiLCJuYW1lIjoidG9rZW5pemVyLmpzb24ifV0sInNlcmlhbGl6YXRpb24iOnsiYWxsb3dfc3ltbGlua3MiOmZhbHNlLCJoYXNoX3R5cGUiOiJzaGEyNTYiLCJpZ25vcmVfcGF0aHMiOlsibW9kZWwuc2lnIiwicHJvdmVuYW5jZS5pbnRvdG8uanNvbiJdLCJtZXRob2QiOiJmaWxlcyJ9fX0=",
    "payloadType": "application/vnd.in-toto+json",
    "signatures": [
      {
        "keyid": "fee967477d01d313d07242ccd328e2bb0bd94a74f170aec30bd4df7bf6e2fe20",
        "sig": "MEUCIQCwJdgsywya5tPkun6/PSDeRjOuXo3uPYRS0O4sRGQlkQIgI3OgLPZMqj9fgj/+6HbxmYdEsBg2y0przlzNO7Ehdyo="
      }
    ]
  }
}
