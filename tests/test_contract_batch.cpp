// The contract harness (tests/contract_checks.hpp) over the CS-IB cases of tests/contract.hpp.
#define LOSSKIT_CONTRACT_GROUP "batch"
#define LOSSKIT_CONTRACT_GROUP_CASES LOSSKIT_CONTRACT_BATCH_CS
#include "contract_checks.hpp"
