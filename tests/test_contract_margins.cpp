// The contract harness (tests/contract_checks.hpp) over the comp-sum, LDR and Z-loss cases of tests/contract.hpp.
#define LOSSKIT_CONTRACT_GROUP "margins"
#define LOSSKIT_CONTRACT_GROUP_CASES LOSSKIT_CONTRACT_LOSSES_MARGIN
#include "contract_checks.hpp"
