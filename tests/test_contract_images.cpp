// The contract harness (tests/contract_checks.hpp) over the images cases of tests/contract.hpp.
#define LOSSKIT_CONTRACT_GROUP "images"
#define LOSSKIT_CONTRACT_GROUP_CASES LOSSKIT_CONTRACT_IMAGES
#include "contract_checks.hpp"
